"""The scale scenario: N pods per node, and what the mesh costs for them.

For each level N the bench applies a ``scale`` workload of N replicas on node-1 in every
contender's namespace (one ``lab apply`` per level, every contender at once, so contenders
still alternate within the level), then per run: a light steady load (flowprobe, open loop,
``SCALE_RATE`` req/s through the Service, so spread over the N pods) from the same-node
client, and over the window:

* memory: the PSS of every process in the N pods' ``proxy`` cgroup leaves — PSS, not RSS,
  because N copies of one proxy share their text pages and RSS would count those N times —
  plus the node's shared mesh processes (none for sidecars; an agent or node proxy for the
  node-level placements), read at the end of the window;
* CPU: the growth of the proxy leaves' CPU time (and of the lab's eBPF programs' run time)
  as a share of one core;
* both also per pod: a sidecar's cost grows with N, a node proxy's is paid once.

The app processes' PSS is reported beside them, so the mesh's share of the node is visible.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from hybridmesh.bench.accounting import bpf_run_time_ns
from hybridmesh.bench.bed import BedError, TestBed, stop_process
from hybridmesh.bench.blast import in_window
from hybridmesh.bench.flowprobe import healthy
from hybridmesh.bench.measure import RunError
from hybridmesh.bench.model import SampleDoc
from hybridmesh.bench.scenarios import CONTENDERS, Contender, measures
from hybridmesh.bench.schedule import Run
from hybridmesh.bench.topology import (
    SCALE_SERVICE,
    SERVER_NODE,
    client_pod,
    namespace_of,
    scale_overlay,
)
from hybridmesh.lab.agents import needs_agent
from hybridmesh.lab.cgroups import PodCgroup
from hybridmesh.lab.client import LabClient

__all__ = ["SCALE_RATE", "ScaleRunner", "parse_pss_kib", "scale_metrics"]

SCALE_RATE = 100.0
_MIB = 1 << 20


def parse_pss_kib(smaps_rollup: str) -> int:
    """The ``Pss:`` line of /proc/PID/smaps_rollup, in KiB (0 if absent)."""
    for line in smaps_rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _pss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            total += parse_pss_kib(Path(f"/proc/{pid}/smaps_rollup").read_text()) * 1024
    return total


def scale_metrics(
    pods: int,
    *,
    proxy_pss: int,
    shared_pss: int,
    app_pss: int,
    proxy_cpu_us: int,
    ebpf_ns: int,
    seconds: float,
) -> dict[str, float]:
    """The scale figures of one window (bytes, µs and ns in; MiB and % of a core out)."""
    seconds = max(seconds, 1e-9)
    mesh = proxy_pss + shared_pss
    ebpf_ns = max(ebpf_ns, 0)  # a program unloaded in the window takes its run time along
    cpu_pct = 100 * (proxy_cpu_us / 1e6) / seconds
    ebpf_pct = 100 * (ebpf_ns / 1e9) / seconds
    return {
        "mesh_pss_mib": mesh / _MIB,
        "mesh_pss_per_pod_mib": mesh / _MIB / pods,
        "shared_pss_mib": shared_pss / _MIB,
        "app_pss_mib": app_pss / _MIB,
        "mesh_cpu_pct": round(cpu_pct + ebpf_pct, 3),
        "mesh_cpu_per_pod_pct": round((cpu_pct + ebpf_pct) / pods, 4),
        "ebpf_cpu_pct": round(ebpf_pct, 4),
    }


class ScaleRunner:
    """The executor of ``scale`` on a test bed."""

    def __init__(self, bed: TestBed) -> None:
        self.bed = bed
        self._refused: dict[int, str] = {}  # pods -> why the lab could not apply them
        self._contenders = [c for c in bed.contenders if measures("scale", c)]

    def measure(self, run: Run) -> SampleDoc:
        pods = int(run.cell.level or 1)
        contender = CONTENDERS[run.contender]
        self._ensure(pods)
        cgroups = self._cgroups(contender)
        if len(cgroups) != pods:
            raise RunError(f"scale: {len(cgroups)} {SCALE_SERVICE} pods in "
                           f"{namespace_of(contender.name)}, expected {pods}")  # fmt: skip
        started = time.time()
        out = self.bed.workdir / "logs" / f"scale-{run.order:04d}-{run.contender}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "hybridmesh.bench.flowprobe",
            f"--target={SCALE_SERVICE}=http://{SCALE_SERVICE}/", "--rate", f"{SCALE_RATE:g}",
            "--out", str(out),
        ]  # fmt: skip
        client = client_pod(run.contender, "same-node")
        load = PodCgroup(client.namespace, client.name, self.bed.layout)
        proc, log = self.bed.spawn(client, argv, "flowprobe-scale")
        try:
            _wait_healthy(log)
            time.sleep(run.warmup_s)
            t0, cpu0, bpf0 = time.monotonic(), _proxy_cpu(cgroups), bpf_run_time_ns()
            gen0 = load.usage().cpu_usec_by_leaf.get("app", 0)
            time.sleep(run.duration_s)
            t1, cpu1, bpf1 = time.monotonic(), _proxy_cpu(cgroups), bpf_run_time_ns()
            gen1 = load.usage().cpu_usec_by_leaf.get("app", 0)
            proxy_pss = _pss_bytes(_pids(cgroups, "proxy"))
            app_pss = _pss_bytes(_pids(cgroups, "app"))
        finally:
            stop_process(proc)
        records = in_window(json.loads(out.read_text())["targets"][SCALE_SERVICE], t0, t1)
        metrics = scale_metrics(
            pods, proxy_pss=proxy_pss, shared_pss=_pss_bytes(self._shared_pids(contender)),
            app_pss=app_pss, proxy_cpu_us=cpu1 - cpu0, ebpf_ns=bpf1 - bpf0, seconds=t1 - t0,
        )  # fmt: skip
        metrics["rps"] = round(len(records) / max(t1 - t0, 1e-9), 2)
        metrics["target_rps"] = SCALE_RATE
        metrics["errors"] = float(sum(1 for r in records if not r[2]))
        metrics["cpu_loadgen_pct"] = round(100 * (gen1 - gen0) / 1e6 / max(t1 - t0, 1e-9), 2)
        return SampleDoc(
            scenario=run.cell.scenario, variant=run.cell.variant, level=run.cell.level,
            contender=run.contender, repeat=run.repeat, order=run.order, started_at=started,
            wall_s=round(t1 - t0, 3), metrics=metrics,
        )  # fmt: skip

    def _ensure(self, pods: int) -> None:
        """Apply ``pods`` replicas unless the lab already has them (also after a rebuild)."""
        if all(len(self._cgroups(c)) == pods for c in self._contenders):
            return
        if pods in self._refused:  # once is enough: every contender's run would retry it
            raise RunError(f"scale: {pods} pods could not be applied: {self._refused[pods]}")
        try:
            self.bed.apply(scale_overlay(self._contenders, pods))
        except BedError as exc:
            self._refused[pods] = exc.message
            raise

    def _cgroups(self, contender: Contender) -> list[PodCgroup]:
        ns = namespace_of(contender.name)
        return [
            PodCgroup(ns, p["name"], self.bed.layout)
            for p in self.bed.status["pods"]
            if p["namespace"] == ns and p["name"].startswith(f"{SCALE_SERVICE}-")
        ]

    def _shared_pids(self, contender: Contender) -> list[int]:
        """The node's mesh processes shared by every pod: node-1's agent when the placement
        needs one (the lab knows which), whole — it serves every agent placement's pods — and
        node-1's node proxy for the node placement."""
        pids: list[int] = []
        if needs_agent(contender.placement):
            status = LabClient().call("GET", "/v1/lab/status").body or {}
            pids += [
                int(a["pid"])
                for a in status.get("agents", [])
                if a.get("node") == SERVER_NODE and a.get("pid")
            ]
        if contender.proxy == "node":
            nodes = LabClient().call("GET", "/v1/lab/nodes").body or {}
            pids += [
                int(r["pid"])
                for r in nodes.get("nodeProxies", [])
                if r.get("node") == SERVER_NODE and r.get("pid")
            ]
        return pids


def _wait_healthy(log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if healthy(log.read_text(errors="replace")):
                return
        time.sleep(0.1)
    raise RunError(f"the {SCALE_SERVICE} service did not answer steadily within {timeout:.0f}s")


def _pids(cgroups: Sequence[PodCgroup], leaf: str) -> list[int]:
    pids: set[int] = set()
    for cg in cgroups:
        for procs in cg.procs_files(leaf):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
    return sorted(pids)


def _proxy_cpu(cgroups: Sequence[PodCgroup]) -> int:
    total = 0
    for cg in cgroups:
        with contextlib.suppress(OSError):
            total += cg.usage().cpu_usec_by_leaf.get("proxy", 0)
    return total
