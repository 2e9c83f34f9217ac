"""Keeps each pod's process running, like a kubelet: start, probe readiness, restart on crash.

One ``PodRunner`` per pod. Process exit is awaited through a pidfd, so a hundred supervised pods
cost no threads and no polling. Readiness is a TCP connect to the pod's first container port
(Kubernetes' ``tcpSocket`` probe) made from inside the lab's namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["PodPhase", "PodRunner", "PodStatus", "RestartPolicy"]

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0  # a run this long resets the crash-loop back-off, as the kubelet does
PROBE_PERIOD = 2.0
PROBE_FAILURES = 3


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CRASHLOOP = "CrashLoopBackOff"
    TERMINATING = "Terminating"


class RestartPolicy(StrEnum):
    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


@dataclass
class PodStatus:
    phase: PodPhase = PodPhase.PENDING
    ready: bool = False
    restarts: int = 0
    pid: int | None = None
    last_exit_code: int | None = None
    started_at: float | None = None
    message: str = ""


Launcher = Callable[[], subprocess.Popen[bytes]]
Probe = Callable[[], Awaitable[bool]]


class PodRunner:
    """Runs one pod's main process until ``stop()``; reports readiness through ``on_ready``."""

    def __init__(
        self,
        key: str,
        launch: Launcher,
        probe: Probe | None,
        *,
        restart_policy: RestartPolicy,
        on_ready: Callable[[str, bool], None],
        before_start: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.key = key
        self._before_start = before_start
        self.status = PodStatus()
        self._launch = launch
        self._probe = probe
        self._policy = restart_policy
        self._on_ready = on_ready
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = asyncio.Event()
        self._settled = asyncio.Event()  # first time the pod is ready or has given up
        self._replace = False  # the current process is being replaced on purpose (restart())

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def settled(self) -> asyncio.Event:
        return self._settled

    async def run(self) -> None:
        if self._before_start is not None:  # e.g. the app waits for its sidecar to be ready
            await self._before_start()
        backoff = BACKOFF_START
        while not self._stop.is_set():
            started = time.monotonic()
            code = await self._run_once()
            if self._stop.is_set():
                break
            if self._replace:  # an asked-for replacement: no back-off, not a crash
                self._replace = False
                self.status.restarts += 1
                continue
            if not self._should_restart(code):
                self.status.phase = PodPhase.SUCCEEDED if code == 0 else PodPhase.FAILED
                self._settled.set()
                return
            backoff = BACKOFF_START if time.monotonic() - started >= STABLE_AFTER else backoff
            self.status.phase = PodPhase.CRASHLOOP
            self.status.message = f"exited with {code}; restarting in {backoff:.1f}s"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            self.status.restarts += 1

    def _should_restart(self, code: int) -> bool:
        if self._policy is RestartPolicy.ALWAYS:
            return True
        return self._policy is RestartPolicy.ON_FAILURE and code != 0

    async def _run_once(self) -> int:
        try:
            proc = self._launch()
        except OSError as exc:
            self.status.message = f"cannot start: {exc}"
            return 127
        self._proc = proc
        self.status.pid = proc.pid
        self.status.phase = PodPhase.RUNNING
        self.status.started_at = time.time()
        self.status.message = ""
        probing = asyncio.get_running_loop().create_task(self._probe_loop())
        try:
            code = await wait_exit(proc)
        finally:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing
            self._set_ready(False)
        self.status.last_exit_code = code
        self.status.pid = None
        return code

    async def _probe_loop(self) -> None:
        if self._probe is None:
            self._set_ready(True)
            return
        while not await self._probe():  # start-up: probe fast until the app listens
            await asyncio.sleep(0.05)
        self._set_ready(True)
        failures = 0
        while True:
            await asyncio.sleep(PROBE_PERIOD)
            failures = 0 if await self._probe() else failures + 1
            self._set_ready(failures < PROBE_FAILURES)

    def _set_ready(self, ready: bool) -> None:
        if ready:
            self._settled.set()
        if self.status.ready != ready:
            self.status.ready = ready
            self._on_ready(self.key, ready)

    async def restart(self, grace: float = 5.0, ready_timeout: float = 30.0) -> int | None:
        """Replace the running process at once (SIGTERM, SIGKILL after ``grace``) and wait up
        to ``ready_timeout`` for its successor to be ready; returns the successor's pid.

        Unlike a crash this costs no back-off: it is how an operator restarts or upgrades an
        agent, and the whole point is that the replacement follows immediately.
        """
        proc = self._proc
        if self._stop.is_set() or proc is None or proc.poll() is not None:
            return self.status.pid
        self._replace = True
        await _terminate(proc, grace)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if self.status.pid not in (None, proc.pid) and self.status.ready:
                return self.status.pid
            await asyncio.sleep(0.05)
        return self.status.pid

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds for a clean exit, then SIGKILL."""
        self._stop.set()
        self.status.phase = PodPhase.TERMINATING
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        await _terminate(proc, grace)


async def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, wait up to ``grace`` seconds for a clean exit, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(wait_exit(proc), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await wait_exit(proc)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Await a child's exit without a thread: the pidfd becomes readable when it exits."""
    if (code := proc.poll()) is not None:
        return code
    loop = asyncio.get_running_loop()
    fd = os.pidfd_open(proc.pid)
    exited = loop.create_future()
    loop.add_reader(fd, _resolve, exited)
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()
