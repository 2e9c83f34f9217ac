"""One node agent per lab node, supervised like a pod (restarted on crash), and the gate that
starts an eBPF-placed pod's app only once its node's agent has programmed the pod.

Each agent runs in ``hm-lab/hm-agent-<node>`` (every hierarchy the lab uses), so ``lab down``'s
sweep finds it whatever happened to the daemon; its log is ``STATE_DIR/logs/agent-<node>.log``.
Agents run in the host's network namespace: everything they touch (bpffs, cgroupfs, the
control socket) is reachable from there, and eBPF programs attach to cgroups, not netns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hybridmesh import env as hm_env
from hybridmesh.agent.client import AgentUnavailable, agent_socket, pod_programmed
from hybridmesh.control.model import PodInfo
from hybridmesh.lab import procs
from hybridmesh.lab.cgroups import CgroupLayout
from hybridmesh.lab.supervisor import PodRunner, RestartPolicy

__all__ = ["AGENT_PLACEMENTS", "AgentSet", "agent_cgroup", "agent_log_path", "needs_agent",
           "service_environment", "service_procs_files"]

log = logging.getLogger("hybridmesh.lab.agents")

AGENT_PLACEMENTS = frozenset({"kernel", "sidecar+ebpf", "node"})
"""Placements whose pods must be programmed by their node's agent before their app starts."""


def needs_agent(placement: str) -> bool:
    return placement in AGENT_PLACEMENTS


def agent_cgroup(node: str) -> str:
    return f"{hm_env.PREFIX}agent-{node}"


def agent_log_path(node: str) -> Path:
    return hm_env.STATE_DIR / "logs" / f"agent-{node}.log"


def service_procs_files(layout: CgroupLayout, cgroup: str) -> list[Path]:
    """``cgroup.procs`` of ``hm-lab/<cgroup>`` in every hierarchy (created): where a lab
    service process (agent, node proxy) lives so the sweep finds it."""
    files = []
    for root in layout.hierarchies:
        path = root / hm_env.LAB_CGROUP / cgroup
        path.mkdir(parents=True, exist_ok=True)
        files.append(path / "cgroup.procs")
    return files


def service_environment() -> dict[str, str]:
    """The daemon's environment a lab service needs (state dir, bpffs, cgroup root)."""
    keep = ("PATH", "LANG", "HOME", "HM_STATE_DIR", "HM_BPFFS", "HM_CGROUP_ROOT",
            "HM_AGENT_DATAPATHS", "PYTHONPATH")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k in keep}
    return {**env, "PYTHONUNBUFFERED": "1"}


async def _socket_answers(node: str) -> bool:
    try:
        _, writer = await asyncio.open_unix_connection(str(agent_socket(node)))
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class AgentSet:
    """The agents of the lab's nodes."""

    def __init__(self, layout: CgroupLayout, spawn: Callable[[PodRunner], object]) -> None:
        self._layout = layout
        self._spawn = spawn  # runs a runner's run() as a kept task (the lab's TaskSet)
        self._runners: dict[str, PodRunner] = {}

    def start(self, node: str) -> None:
        if node in self._runners:
            return
        runner = PodRunner(
            f"agent/{node}",
            launch=lambda: self._launch(node),
            probe=lambda: _socket_answers(node),
            restart_policy=RestartPolicy.ALWAYS,
            on_ready=lambda _key, ready: log.info("agent %s ready=%s", node, ready),
        )
        self._runners[node] = runner
        self._spawn(runner)

    def _launch(self, node: str) -> Any:
        agent_log_path(node).parent.mkdir(parents=True, exist_ok=True)
        return procs.spawn_in_cgroup(
            service_procs_files(self._layout, agent_cgroup(node)),
            [sys.executable, "-m", "hybridmesh.agent", "--node", node],
            service_environment(),
            agent_log_path(node),
        )

    async def stop(self, node: str | None = None) -> None:
        """Stop one node's agent (its node left) or all of them; pins stay for the sweep."""
        nodes = [node] if node is not None else list(self._runners)
        runners = [r for n in nodes if (r := self._runners.pop(n, None)) is not None]
        await asyncio.gather(*(r.stop() for r in runners))

    async def restart(self, node: str) -> dict[str, Any]:
        runner = self._runners.get(node)
        if runner is None:
            raise KeyError(node)
        old = runner.status.pid
        new = await runner.restart()
        return {"node": node, "oldPid": old, "pid": new, "ready": runner.status.ready,
                "restarts": runner.status.restarts}  # fmt: skip

    async def wait_programmed(self, pod: PodInfo, version: Callable[[], int],
                              report: Callable[[str], None]) -> None:
        """Return once the pod's node agent says every datapath programmed the pod at (at
        least) the node snapshot version current at each ask; ``report`` gets progress."""
        while True:
            try:
                verdict = await pod_programmed(pod.node, pod.key, version(), wait=10)
            except AgentUnavailable as exc:
                report(f"waiting for the node agent: {exc}")
                await asyncio.sleep(0.2)
                continue
            if verdict.get("programmed"):
                report("")
                return
            report(f"waiting for the node agent: {', '.join(verdict.get('waitingFor') or [])}")

    def status(self) -> list[dict[str, Any]]:
        out = []
        for node, runner in sorted(self._runners.items()):
            st = runner.status
            out.append({"node": node, "phase": st.phase.value, "ready": st.ready,
                        "restarts": st.restarts, "pid": st.pid, "message": st.message,
                        "log": str(agent_log_path(node))})  # fmt: skip
        return out
