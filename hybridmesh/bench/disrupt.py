"""blast-radius and upgrade: disturb a contender's data plane under load, record what failed.

Both run the same load: flowprobe in the two client pods (same-node, cross-node), each
calling both 1-replica services ``blast-a`` and ``blast-b`` open loop, every request
recorded. Then:

* blast-radius kills one proxy with SIGKILL — the server-side sidecar of ``blast-a-0``
  (hybridmesh's, which the lab's supervisor restarts with its crash back-off; or Envoy's,
  which the bench restarts after the same back-off, standing in for the kubelet); for
  ``kernel``, which has no proxy, node-1's agent; for ``node``, node-1's node proxy, which
  every path crosses — and watches ``Profile.disruption_s`` more
  seconds;
* upgrade restarts every proxy of the contender's namespace, one pod at a time, each waited
  for until ready again (how a sidecar upgrade reaches running pods), or, for ``kernel``,
  every node's agent (``hybridmesh agent restart NODE``: eBPF programs and maps stay pinned,
  so no pod restarts), or, for ``node``, every node proxy (``hybridmesh node upgrade NODE``:
  the successor takes the listening sockets over, the old one drains); then it watches 1 s
  more.

How a contender is disturbed is read from its table row (``Contender.kill`` and
``.upgrade``); a kind this module does not know yet fails the run with a clear message
instead of reporting a disruption that did not happen.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridmesh.bench.bed import BedError, TestBed, stop_process
from hybridmesh.bench.blast import Record, blast_metrics, in_window, upgrade_metrics
from hybridmesh.bench.envoy_sidecar import envoy_binary
from hybridmesh.bench.flowprobe import healthy
from hybridmesh.bench.measure import RunError
from hybridmesh.bench.model import SampleDoc
from hybridmesh.bench.scenarios import CONTENDERS, Contender
from hybridmesh.bench.schedule import Run
from hybridmesh.bench.topology import (
    BLAST_SERVICES,
    SERVER_NODE,
    PodRole,
    client_pod,
    namespace_of,
)
from hybridmesh.lab.cgroups import PodCgroup
from hybridmesh.lab.client import LabClient
from hybridmesh.lab.supervisor import BACKOFF_START

__all__ = ["PROBE_RATE", "Disruption"]

PROBE_RATE = 50.0  # requests/s per path; 4 paths: light, so the disruption is what shows
PROBE_TIMEOUT = 1.0
BEFORE_S = 1.0  # steady traffic observed before the disruption
AFTER_UPGRADE_S = 1.0
READY_TIMEOUT = 30.0
HEALTHY_TIMEOUT = 20.0
_CLIENTS = ("same-node", "cross-node")


@dataclass
class _Probe:
    name: str  # "same" / "cross"
    process: subprocess.Popen[bytes]
    out: Path
    log: Path


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class Disruption:
    """The executor of ``blast-radius`` or ``upgrade`` (``kind``) on a test bed."""

    def __init__(self, bed: TestBed, kind: str, after_s: float) -> None:
        if kind not in ("blast-radius", "upgrade"):
            raise ValueError(f"not a disruption scenario: {kind!r}")
        self.bed, self.kind, self.after_s = bed, kind, after_s

    def measure(self, run: Run) -> SampleDoc:
        contender = CONTENDERS[run.contender]
        started = time.time()
        probes = self._start_probes(run)
        try:
            self._wait_healthy(probes)  # nothing is disturbed before every path works
            time.sleep(run.warmup_s)
            opened = time.monotonic()
            time.sleep(BEFORE_S)
            metrics = self._disturb(contender, opened, probes)
        finally:
            for probe in probes:
                stop_process(probe.process, grace=PROBE_TIMEOUT + 5)
        return SampleDoc(
            scenario=run.cell.scenario, variant=run.cell.variant, level=run.cell.level,
            contender=run.contender, repeat=run.repeat, order=run.order, started_at=started,
            wall_s=round(metrics.pop("_wall_s"), 3), metrics=metrics,
        )  # fmt: skip

    def _disturb(self, contender: Contender, opened: float, probes: list[_Probe]) -> dict[str, Any]:
        if self.kind == "blast-radius":
            killed_at, affected = self._kill(contender)
            time.sleep(self.after_s)
            closed = time.monotonic()
            paths = self._paths(probes, opened, closed)
            metrics = blast_metrics(paths, affected, killed_at=killed_at, end=closed)
        else:
            began = time.monotonic()
            restarts, agents = self._upgrade(contender)
            seconds = time.monotonic() - began
            time.sleep(AFTER_UPGRADE_S)
            closed = time.monotonic()
            paths = self._paths(probes, opened, closed)
            metrics = upgrade_metrics(paths, restarts=restarts, seconds=seconds)
            metrics["node_restarts"] = float(agents)
        return {**metrics, "_wall_s": closed - opened}

    # -- load ----------------------------------------------------------------------------
    def _start_probes(self, run: Run) -> list[_Probe]:
        targets = [f"--target={svc}=http://{svc}/" for svc in BLAST_SERVICES]
        probes = []
        for variant in _CLIENTS:
            role = client_pod(run.contender, variant)
            short = variant.split("-", maxsplit=1)[0]
            out = self.bed.workdir / "logs" / f"flow-{run.order:04d}-{run.contender}-{short}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            argv = [
                sys.executable, "-m", "hybridmesh.bench.flowprobe", *targets,
                "--rate", f"{PROBE_RATE:g}", "--timeout", f"{PROBE_TIMEOUT:g}", "--out", str(out),
            ]  # fmt: skip
            proc, log = self.bed.spawn(role, argv, f"flowprobe-{run.contender}-{short}")
            probes.append(_Probe(short, proc, out, log))
        return probes

    def _wait_healthy(self, probes: Sequence[_Probe]) -> None:
        deadline = time.monotonic() + HEALTHY_TIMEOUT
        while time.monotonic() < deadline:
            if all(healthy(_read(p.log)) for p in probes):
                return
            for probe in probes:
                if probe.process.poll() is not None:
                    raise RunError(f"flowprobe in the {probe.name} client exited: "
                                   f"{_read(probe.log)[-300:]}")  # fmt: skip
            time.sleep(0.1)
        raise RunError(
            f"the blast paths did not all work within {HEALTHY_TIMEOUT:.0f}s of starting the "
            "load, before anything was disturbed",
            f"see the flowprobe logs in {self.bed.workdir / 'logs'}",
        )

    def _paths(self, probes: Sequence[_Probe], start: float, end: float) -> dict[str, list[Record]]:
        for probe in probes:
            stop_process(probe.process, grace=PROBE_TIMEOUT + 5)
        paths: dict[str, list[Record]] = {}
        for probe in probes:
            try:
                doc = json.loads(probe.out.read_text())
            except (OSError, ValueError) as exc:
                raise RunError(f"flowprobe in the {probe.name} client wrote no records: "
                                      f"{exc}") from None  # fmt: skip
            for target, records in doc["targets"].items():
                paths[f"{probe.name}>{target}"] = in_window(records, start, end)
        if not any(paths.values()):
            raise RunError("flowprobe recorded no requests in the window")
        return paths

    # -- blast-radius --------------------------------------------------------------------
    def _kill(self, contender: Contender) -> tuple[float | None, list[str]]:
        """Kill the contender's proxy on blast-a's path: when, and which paths it serves."""
        affected = [f"{c.split('-', maxsplit=1)[0]}>{BLAST_SERVICES[0]}" for c in _CLIENTS]
        victim = PodRole(namespace_of(contender.name), f"{BLAST_SERVICES[0]}-0")
        if contender.kill == "none":
            return None, affected
        if contender.kill == "sidecar":
            at = time.monotonic()
            if not self._signal_proxy(victim, signal.SIGKILL):
                raise RunError(f"no sidecar process in {victim.key} to kill")
            return at, affected
        if contender.kill == "envoy":
            envoy = self.bed.envoy(victim)
            if envoy is None or envoy.process is None:
                raise RunError(f"no Envoy in {victim.key} to kill")
            at = time.monotonic()
            envoy.process.kill()
            envoy.process.wait()
            time.sleep(BACKOFF_START)  # the kubelet's first crash back-off, as the lab's
            envoy.start(envoy_binary(), self.bed.env_for(victim))
            return at, affected
        if contender.kill in ("agent", "node-proxy"):  # node-1 serves every path: all exposed
            pid = self._node_pid(contender.kill, SERVER_NODE)
            at = time.monotonic()
            os.kill(pid, signal.SIGKILL)  # the lab's supervisor restarts it
            return at, [
                f"{c.split('-', maxsplit=1)[0]}>{s}" for c in _CLIENTS for s in BLAST_SERVICES
            ]
        raise RunError(f"blast-radius cannot kill a {contender.kill!r} yet")

    def _node_pid(self, kind: str, node: str) -> int:
        """The pid of ``node``'s agent or node proxy, from the lab's own status."""
        if kind == "agent":
            rows = (LabClient().call("GET", "/v1/lab/status").body or {}).get("agents", [])
        else:
            rows = (LabClient().call("GET", "/v1/lab/nodes").body or {}).get("nodeProxies", [])
        for row in rows:
            if row.get("node") == node and row.get("pid"):
                return int(row["pid"])
        raise RunError(f"no running {kind} on {node} to kill")

    def _signal_proxy(self, role: PodRole, sig: signal.Signals) -> bool:
        pids: set[int] = set()
        for procs in PodCgroup(role.namespace, role.name, self.bed.layout).procs_files("proxy"):
            with contextlib.suppress(OSError):
                pids.update(int(x) for x in procs.read_text().split())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return bool(pids)

    # -- upgrade -------------------------------------------------------------------------
    def _upgrade(self, contender: Contender) -> tuple[int, int]:
        """Upgrade the contender's data plane: (pod restarts, node agents restarted)."""
        if contender.upgrade == "none":
            return 0, 0
        if contender.upgrade == "restart-pods":
            pods = self._pods(contender)
            for role in pods:
                self._restart_proxy(contender, role)
            return len(pods), 0
        if contender.upgrade == "agent-restart":
            nodes = [n["name"] for n in self.bed.status.get("nodes", [])]
            for node in nodes:
                self._restart_agent(node)
            return 0, len(nodes)
        if contender.upgrade == "hitless":
            rows = (LabClient().call("GET", "/v1/lab/nodes").body or {}).get("nodeProxies", [])
            for row in rows:
                self._upgrade_node_proxy(str(row["node"]))
            return 0, len(rows)
        raise RunError(f"upgrade of a {contender.upgrade!r} data plane is not there yet")

    def _restart_agent(self, node: str) -> None:
        """``hybridmesh agent restart NODE``'s call: a new agent process, eBPF state kept."""
        result = LabClient(timeout=60).call("POST", f"/v1/lab/agents/{node}/restart")
        body = result.body if isinstance(result.body, dict) else {}
        if result.status != 200 or not body.get("ready"):
            raise RunError(f"the agent of {node} did not restart cleanly: {result.status} "
                           f"{str(result.body)[:200]}")  # fmt: skip

    def _upgrade_node_proxy(self, node: str) -> None:
        """``hybridmesh node upgrade NODE``'s call: the successor takes the listening sockets
        over, the old process drains its connections."""
        result = LabClient(timeout=60).call("POST", f"/v1/lab/nodes/{node}/upgrade")
        if result.status != 200:
            raise RunError(f"the node proxy of {node} was not upgraded: {result.status} "
                           f"{str(result.body)[:200]}")  # fmt: skip

    def _pods(self, contender: Contender) -> list[PodRole]:
        ns = namespace_of(contender.name)
        return [PodRole(ns, p["name"]) for p in self.bed.status["pods"] if p["namespace"] == ns]

    def _restart_proxy(self, contender: Contender, role: PodRole) -> None:
        if contender.proxy == "envoy":
            envoy = self.bed.envoy(role)
            if envoy is None or envoy.process is None:
                raise RunError(f"no Envoy in {role.key} to restart")
            envoy.process.terminate()
            envoy.process.wait(10)
            envoy.start(envoy_binary(), self.bed.env_for(role))
            return
        before = self._proxy_state(role)
        if before is None:
            raise RunError(f"{role.key} has no proxy to restart")
        self._signal_proxy(role, signal.SIGTERM)
        self._wait_restarted(role, int(before.get("restarts", 0)))

    def _proxy_state(self, role: PodRole) -> dict[str, Any] | None:
        body = LabClient().call("GET", f"/v1/lab/pods/{role.key}").body
        proxy = (body or {}).get("proxy")
        return proxy if isinstance(proxy, dict) else None

    def _wait_restarted(self, role: PodRole, restarts: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            state = self._proxy_state(role) or {}
            if int(state.get("restarts", 0)) > restarts and state.get("ready"):
                return
            time.sleep(0.05)
        raise BedError(f"the proxy of {role.key} was not ready again {READY_TIMEOUT:.0f}s after "
                       "its restart")  # fmt: skip
