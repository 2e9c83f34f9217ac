"""One node proxy per lab node hosting ``placement: node`` pods: started, supervised, upgraded.

The node proxy (``hybridmesh.agent.nodeproxy``) runs in the node's netns (entered with
``nsenter --net``, which keeps the host's /sys: bpffs and cgroupfs), in the
``hm-lab/hm-nodeproxy-<node>`` cgroup of every hierarchy (``lab down``'s sweep finds it), log
``STATE_DIR/logs/nodeproxy-<node>.log``. Its credential is a node token the lab writes like the
pods' bootstrap tokens (``STATE_DIR/nodes/<node>/token``, 0400 in a 0700 dir, refreshed).

Supervision differs from a pod's on purpose: an *upgrade* starts a successor with
``--takeover`` while the old process keeps running — it hands its listening sockets over and
drains its established connections, then exits 0 by itself, possibly much later. So a runner
has one *current* process (restarted with back-off if it dies) and any number of *draining*
ones that are only reaped, never signalled (killing one would cut the connections the upgrade
exists to keep). A crash of the current one restarts it fresh (its sockets died with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from hybridmesh import env as hm_env
from hybridmesh._aio import TaskSet
from hybridmesh.agent.nodeproxy.__main__ import default_handoff, default_token_file
from hybridmesh.agent.nodeproxy.source import map_pin
from hybridmesh.control.model import PodInfo
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.lab import _sh, names, netns, procs
from hybridmesh.lab._nodecontrol import node_control_socket
from hybridmesh.lab._sh import LabError
from hybridmesh.lab.agents import service_environment, service_procs_files
from hybridmesh.lab.cgroups import CgroupLayout
from hybridmesh.lab.supervisor import BACKOFF_MAX, BACKOFF_START, STABLE_AFTER, PodPhase, PodStatus
from hybridmesh.lab.supervisor import wait_exit as _wait_exit

__all__ = [
    "ADMIN_PORT",
    "NODE_PLACEMENT",
    "NodeProxyRunner",
    "NodeProxySet",
    "UpgradeError",
    "admin_get",
    "nodeproxy_log_path",
]

log = logging.getLogger("hybridmesh.lab.nodeproxies")

NODE_PLACEMENT: Final = "node"
ADMIN_PORT: Final = 15020
TOKEN_REFRESH_S: Final = 20 * 60.0
PROBE_PERIOD: Final = 2.0


class UpgradeError(Exception):
    """An upgrade could not happen; the old node proxy (if any) keeps serving."""


def nodeproxy_log_path(node: str) -> Path:
    return hm_env.STATE_DIR / "logs" / f"nodeproxy-{node}.log"


async def admin_get(node: str, path: str, timeout: float = 1.0) -> tuple[int, Any] | None:
    """``GET path`` on the node proxy's admin port from the node netns: (status, JSON) or None."""
    try:
        reader, writer = await netns.open_connection(names.node_netns(node), "127.0.0.1",
                                                     ADMIN_PORT, timeout)
    except OSError:
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: nodeproxy\r\nConnection: close\r\n\r\n"
                     .encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), json.loads(body or b"null")
    except (OSError, TimeoutError, ValueError, IndexError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _ensure_source_map(node: str) -> None:
    """Pin ``hm_node_src`` if the agent has not yet: the proxy opens it at start."""
    pin = map_pin(node)
    if pin.exists():
        return
    from hybridmesh.agent.nodeproxy._libbpf_nodesrc import create_source_map

    try:
        os.close(create_source_map(pin))
    except BpfError:
        if not pin.exists():  # not a race with the agent pinning it first
            raise


class NodeTokenFiles:
    """Writes each node proxy's node token where only root can read it."""

    def __init__(self, issue: Callable[[str], str]) -> None:
        self._issue = issue

    def write(self, node: str) -> Path:
        target = default_token_file(node)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(target.parent, 0o700)
        tmp = target.parent / f".token.{os.urandom(6).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o400)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(self._issue(node))
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def remove(self, node: str) -> None:
        shutil.rmtree(default_token_file(node).parent, ignore_errors=True)

    async def refresh_forever(self, nodes: Callable[[], Iterable[str]]) -> None:
        while True:
            await asyncio.sleep(TOKEN_REFRESH_S)
            for node in list(nodes()):
                try:
                    await asyncio.to_thread(self.write, node)
                except OSError as exc:  # the old token is still valid; the next pass retries
                    log.warning("node token refresh for %s failed: %s", node, exc)


Launcher = Callable[[Path | None], subprocess.Popen[bytes]]


class NodeProxyRunner:
    """One node's proxy: a current process (supervised) and draining predecessors (reaped)."""

    def __init__(self, node: str, launch: Launcher) -> None:
        self.node = node
        self.status = PodStatus()
        self.upgrades = 0
        self.draining: dict[int, subprocess.Popen[bytes]] = {}
        self._launch = launch
        self._proc: subprocess.Popen[bytes] | None = None
        self._swapped = asyncio.Event()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks = TaskSet()  # probe, exit waits, reapers of draining processes
        self.ready = asyncio.Event()  # first readiness

    async def run(self) -> None:
        backoff = BACKOFF_START
        probe = self._tasks.spawn(self._probe_loop(), name=f"nodeproxy-probe {self.node}")
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                code = await self._run_current()
                if self._stop.is_set():
                    break
                backoff = BACKOFF_START if time.monotonic() - started >= STABLE_AFTER else backoff
                self.status.phase = PodPhase.CRASHLOOP
                self.status.message = f"exited with {code}; restarting in {backoff:.1f}s"
                log.warning("node proxy %s %s", self.node, self.status.message)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                self.status.restarts += 1
        finally:
            probe.cancel()

    async def _run_current(self) -> int:
        try:
            self._adopt(self._launch(None))
        except (OSError, LabError, BpfError) as exc:
            self.status.message = f"cannot start: {exc}"
            return 127
        while not self._stop.is_set():  # follow the current process across upgrades
            proc = self._proc
            assert proc is not None
            exited = self._tasks.spawn(_wait_exit(proc))
            swapped = self._tasks.spawn(self._swapped.wait())
            await asyncio.wait({exited, swapped}, return_when=asyncio.FIRST_COMPLETED)
            swapped.cancel()
            if not exited.done():
                exited.cancel()
                self._swapped.clear()
                continue
            if self._proc is proc or self._stop.is_set():
                code: int = exited.result()
                self._set_ready(False)
                self.status.pid, self.status.last_exit_code = None, code
                return code
        return 0

    def _adopt(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self.status.pid, self.status.phase = proc.pid, PodPhase.RUNNING
        self.status.started_at, self.status.message = time.time(), ""

    async def _probe_loop(self) -> None:
        failures = 0
        while True:
            pid = self.status.pid
            answer = await admin_get(self.node, "/live") if pid else None
            live = answer is not None and answer[1].get("pid") == pid
            failures = 0 if live else failures + 1
            self._set_ready(live or (self.status.ready and failures < 3))
            await asyncio.sleep(PROBE_PERIOD if self.status.ready else 0.05)

    def _set_ready(self, ready: bool) -> None:
        if ready:
            self.ready.set()
        if ready != self.status.ready:
            self.status.ready = ready
            log.info("node proxy %s ready=%s (pid %s)", self.node, ready, self.status.pid)

    async def upgrade(self, timeout: float = 30.0) -> dict[str, Any]:
        """Start a successor that takes the listeners over; the old one drains and exits."""
        async with self._lock:
            old = self._proc
            if old is None or old.poll() is not None or self._stop.is_set():
                raise UpgradeError(f"no running node proxy on node {self.node}")
            new = self._launch(default_handoff(self.node))
            await self._await_successor(new, timeout)
            self.draining[old.pid] = old
            self._tasks.spawn(self._reap(old), name=f"nodeproxy-drain {old.pid}")
            self._adopt(new)
            self._swapped.set()
            self.upgrades += 1
            self._set_ready(True)
        return {"node": self.node, "oldPid": old.pid, "newPid": new.pid,
                "draining": sorted(self.draining)}  # fmt: skip

    async def _await_successor(self, new: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if (code := new.poll()) is not None:
                raise UpgradeError(f"the new node proxy exited with {procs.exit_code(code)} "
                                   f"before taking over; the old one keeps serving (log: "
                                   f"{nodeproxy_log_path(self.node)})")
            answer = await admin_get(self.node, "/live")
            if answer is not None and answer[1].get("pid") == new.pid:
                return
            if time.monotonic() > deadline:
                new.kill()
                await _wait_exit(new)
                raise UpgradeError(f"the new node proxy did not answer within {timeout:.0f}s; "
                                   "stopped it, the old one keeps serving")
            await asyncio.sleep(0.05)

    async def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        code = await _wait_exit(proc)
        self.draining.pop(proc.pid, None)
        log.info("node proxy %s: drained pid %d exited with %d", self.node, proc.pid, code)

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every process of this node's proxy (current and draining), then SIGKILL."""
        self._stop.set()
        self._swapped.set()
        self.status.phase = PodPhase.TERMINATING
        live = [p for p in (self._proc, *self.draining.values()) if p and p.poll() is None]
        await asyncio.gather(*(_terminate(p, grace) for p in live))


async def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(_wait_exit(proc), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await _wait_exit(proc)


def nodeproxy_argv(node: str, takeover: Path | None = None) -> list[str]:
    """Only paths on the command line: the token stays in its file."""
    argv = [sys.executable, "-m", "hybridmesh.agent.nodeproxy", "--node", node,
            "--control", str(node_control_socket()),
            "--token-file", str(default_token_file(node))]  # fmt: skip
    return argv + (["--takeover", str(takeover)] if takeover is not None else [])


class NodeProxySet:
    """The lab's node proxies, keyed by node."""

    def __init__(self, layout: CgroupLayout, spawn: Callable[[NodeProxyRunner], object],
                 issue: Callable[[str], str] | None) -> None:
        self._layout = layout
        self._spawn = spawn  # runs runner.run() as a kept task (the lab's TaskSet)
        self._tokens = NodeTokenFiles(issue) if issue is not None else None
        self._runners: dict[str, NodeProxyRunner] = {}

    def nodes(self) -> list[str]:
        return sorted(self._runners)

    def start(self, node: str) -> None:
        if node in self._runners:
            return
        if self._tokens is None:
            raise LabError("placement node needs the mesh CA (node tokens)",
                           "run the lab through its daemon (`hybridmesh lab up`)")
        self._tokens.write(node)
        runner = NodeProxyRunner(node, lambda takeover: self._launch(node, takeover))
        self._runners[node] = runner
        self._spawn(runner)

    def _launch(self, node: str, takeover: Path | None) -> subprocess.Popen[bytes]:
        _ensure_source_map(node)
        # nsenter --net, not ``ip netns exec``: that remounts /sys, hiding bpffs (the pinned
        # hm_node_src) and cgroupfs (the pods' cgroup inodes) the proxy resolves sources with
        return procs.spawn_in_cgroup(
            service_procs_files(self._layout, f"{hm_env.PREFIX}nodeproxy-{node}"),
            _sh.in_netns(names.node_netns(node), nodeproxy_argv(node, takeover)),
            service_environment(), nodeproxy_log_path(node))

    async def refresh_tokens(self) -> None:
        if self._tokens is not None:
            await self._tokens.refresh_forever(self.nodes)

    async def stop(self, node: str | None = None) -> None:
        nodes = [node] if node is not None else list(self._runners)
        runners = [r for n in nodes if (r := self._runners.pop(n, None)) is not None]
        await asyncio.gather(*(r.stop() for r in runners))
        if self._tokens is not None:
            for r in runners:
                self._tokens.remove(r.node)

    async def upgrade(self, node: str) -> dict[str, Any]:
        runner = self._runners.get(node)
        if runner is None:
            raise KeyError(node)
        return await runner.upgrade()

    async def wait_serving(self, pod: PodInfo, report: Callable[[str], None]) -> None:
        """Return once the pod's node proxy holds a valid SVID for it."""
        self.start(pod.node)
        while True:
            answer = await admin_get(pod.node, "/config_dump")
            body = answer[1] if answer is not None and answer[0] == 200 else {}
            state = ((body.get("identities") or {}).get(pod.key) or {}) \
                if isinstance(body, dict) else {}
            if state.get("state") == "valid":
                report("")
                return
            report(f"waiting for the node proxy's SVID ({state.get('last_error') or 'pending'})")
            await asyncio.sleep(0.1)

    def status(self) -> list[dict[str, Any]]:
        out = []
        for node, runner in sorted(self._runners.items()):
            st = runner.status
            out.append({"node": node, "phase": st.phase.value, "ready": st.ready,
                        "restarts": st.restarts, "upgrades": runner.upgrades, "pid": st.pid,
                        "draining": sorted(runner.draining), "message": st.message,
                        "log": str(nodeproxy_log_path(node))})  # fmt: skip
        return out
