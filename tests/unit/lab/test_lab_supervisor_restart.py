"""PodRunner.restart replaces the process at once: no crash back-off, counted as a restart."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from hybridmesh.lab.supervisor import PodPhase, PodRunner, RestartPolicy

pytestmark = pytest.mark.timeout(20)


def test_restart_replaces_the_process_without_back_off() -> None:
    async def run() -> None:
        ready: list[bool] = []
        runner = PodRunner(
            "agent/n1",
            launch=lambda: subprocess.Popen(["sleep", "30"]),
            probe=None,
            restart_policy=RestartPolicy.ALWAYS,
            on_ready=lambda _k, r: ready.append(r),
        )
        task = asyncio.get_running_loop().create_task(runner.run())
        while runner.status.pid is None:
            await asyncio.sleep(0.01)
        first = runner.status.pid
        loop = asyncio.get_running_loop()
        started = loop.time()
        new = await runner.restart(grace=2, ready_timeout=5)
        assert new is not None and new != first
        assert loop.time() - started < 1.0  # the crash back-off (0.5 s and up) was not taken
        assert runner.status.restarts == 1 and runner.status.phase is PodPhase.RUNNING
        assert runner.status.message == ""
        assert ready == [True, False, True]
        await runner.stop(grace=2)
        await task

    asyncio.run(run())


def test_restart_of_a_stopped_runner_does_nothing() -> None:
    async def run() -> None:
        runner = PodRunner("x", launch=lambda: subprocess.Popen(["true"]), probe=None,
                           restart_policy=RestartPolicy.NEVER, on_ready=lambda _k, _r: None)
        assert await runner.restart() is None

    asyncio.run(run())
