"""Who spent the CPU and memory of a run: load generator, app, each proxy, kernel eBPF.

CPU comes from the pods' cgroups (the lab gives every pod an ``app`` and a ``proxy`` leaf):
the client pod's app leaf holds only the load tool the bench runs there (and an idle
``sleep``), the server pod's app leaf the server, each proxy leaf the sidecar. CPU time
spent in softirq on behalf of a process is charged to whoever was running, as the kernel
does; there is no cleaner split without eBPF.

Peak memory is the sum of ``VmHWM`` (peak RSS) over the processes of a leaf (each proxy, the
load tool, the server app), reset at the start of the measured window by writing 5 to
``/proc/<pid>/clear_refs``, so it is the peak of that window rather than of the process's
life. eBPF CPU is the growth of ``run_time_ns`` of the
lab's programs (names ``hm_*``) while ``kernel.bpf_stats_enabled`` is on.

A ``node`` placement has no proxy in the pods: its node proxies live in the lab's
``hm-lab/hm-nodeproxy-<node>`` cgroups, and for that contender (``node_proxies=True``) their
CPU and peak RSS are the proxy figures (both nodes' proxies: the client's and the server's).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hybridmesh import env as hm_env
from hybridmesh.lab import _sh
from hybridmesh.lab.cgroups import CgroupLayout, PodCgroup

__all__ = [
    "Accountant",
    "Peaks",
    "Usage",
    "bpf_run_time_ns",
    "bpf_stats_enabled",
    "node_proxy_pids",
    "parse_bpftool_progs",
    "usage_metrics",
]

BPF_PREFIX = "hm_"
_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Usage:
    """Cumulative counters at one instant."""

    at: float  # time.monotonic()
    cpu_usec: Mapping[str, int]  # component -> cumulative CPU µs
    bpf_ns: int


@dataclass(frozen=True, slots=True)
class Peaks:
    """Peak RSS in the window: each side's proxy, the load tool (client app), the server app."""

    client_bytes: int
    server_bytes: int
    loadgen_bytes: int = 0
    app_bytes: int = 0
    node_proxy_bytes: int = 0


def usage_metrics(before: Usage, after: Usage, ops: float, peaks: Peaks) -> dict[str, float]:
    """Resource figures of the window between two snapshots, per operation where it says so."""
    seconds = max(after.at - before.at, 1e-9)
    per_op = 1.0 / ops if ops > 0 else 0.0
    spent = {c: max(after.cpu_usec[c] - before.cpu_usec[c], 0) for c in after.cpu_usec}
    ebpf_us = max(after.bpf_ns - before.bpf_ns, 0) / 1000
    node_proxy = spent.get("node_proxy", 0)
    proxy = spent.get("proxy_client", 0) + spent.get("proxy_server", 0) + node_proxy
    return {
        "cpu_loadgen_pct": round(100 * spent.get("loadgen", 0) / 1e6 / seconds, 2),
        "cpu_loadgen_us_per_op": spent.get("loadgen", 0) * per_op,
        "cpu_app_us_per_op": spent.get("app", 0) * per_op,
        "cpu_proxy_client_us_per_op": spent.get("proxy_client", 0) * per_op,
        "cpu_proxy_server_us_per_op": spent.get("proxy_server", 0) * per_op,
        "cpu_node_proxy_us_per_op": node_proxy * per_op,
        "cpu_proxy_us_per_op": proxy * per_op,
        "cpu_ebpf_us_per_op": ebpf_us * per_op,
        "rss_proxy_client_mib": peaks.client_bytes / _MIB,
        "rss_proxy_server_mib": peaks.server_bytes / _MIB,
        "rss_node_proxy_mib": peaks.node_proxy_bytes / _MIB,
        "rss_proxy_mib": (peaks.client_bytes + peaks.server_bytes + peaks.node_proxy_bytes) / _MIB,
        "rss_loadgen_mib": peaks.loadgen_bytes / _MIB,
        "rss_app_mib": peaks.app_bytes / _MIB,
    }


def parse_bpftool_progs(text: str, prefix: str = BPF_PREFIX) -> int:
    """Total ``run_time_ns`` of the programs named ``prefix*`` in ``bpftool -j prog show``."""
    data = json.loads(text) if text.strip() else []
    return sum(
        int(p.get("run_time_ns", 0))
        for p in data
        if isinstance(p, dict) and str(p.get("name", "")).startswith(prefix)
    )


def bpf_run_time_ns() -> int:
    """Cumulative run time of the lab's eBPF programs (0 when none are loaded)."""
    out = subprocess.run(
        [_sh.binary("bpftool"), "-j", "prog", "show"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if out.returncode != 0:
        raise _sh.LabError(f"bpftool prog show failed: {out.stderr.strip()}")
    return parse_bpftool_progs(out.stdout)


@contextlib.contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """``kernel.bpf_stats_enabled=1`` for the duration, then the previous value again."""
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    previous = path.read_text().strip()
    path.write_text("1")
    try:
        yield
    finally:
        path.write_text(previous)


def _vm_hwm_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _reset_hwm(pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _node_proxy_dirs(layout: CgroupLayout, controller: str) -> list[Path]:
    root = layout.controller_dir(controller, Path(hm_env.LAB_CGROUP))
    return sorted(root.glob(f"{hm_env.PREFIX}nodeproxy-*"))


def _cgroup_cpu_usec(layout: CgroupLayout, path: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        if layout.is_v2("cpuacct"):
            for line in (path / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1])
            return 0
        return int((path / "cpuacct.usage").read_text()) // 1000
    return 0


def node_proxy_pids(layout: CgroupLayout) -> list[int]:
    """Every process of the lab's node proxies (current and draining), all nodes."""
    pids: set[int] = set()
    for root in layout.hierarchies:
        for procs in (root / hm_env.LAB_CGROUP).glob(f"{hm_env.PREFIX}nodeproxy-*/cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
    return sorted(pids)


@dataclass
class Accountant:
    """Reads the counters of one client pod and one server pod (and of the node proxies,
    for a contender whose proxies are per node)."""

    layout: CgroupLayout
    client: tuple[str, str]  # (namespace, pod)
    server: tuple[str, str]
    node_proxies: bool = False
    _cgroups: dict[str, PodCgroup] = field(init=False)

    def __post_init__(self) -> None:
        self._cgroups = {
            "client": PodCgroup(*self.client, self.layout),
            "server": PodCgroup(*self.server, self.layout),
        }

    def snapshot(self) -> Usage:
        client = self._cgroups["client"].usage().cpu_usec_by_leaf
        server = self._cgroups["server"].usage().cpu_usec_by_leaf
        cpu = {
            "loadgen": client["app"],
            "app": server["app"],
            "proxy_client": client["proxy"],
            "proxy_server": server["proxy"],
            "node_proxy": self._node_proxy_cpu(),
        }
        return Usage(time.monotonic(), cpu, bpf_run_time_ns())

    def _node_proxy_cpu(self) -> int:
        if not self.node_proxies:
            return 0
        dirs = _node_proxy_dirs(self.layout, "cpuacct")
        return sum(_cgroup_cpu_usec(self.layout, d) for d in dirs)

    def pids(self, side: str, leaf: str = "proxy") -> list[int]:
        """Processes in ``side``'s pod ("client"/"server") and cgroup ``leaf``."""
        pids: set[int] = set()
        for procs in self._cgroups[side].procs_files(leaf):
            with contextlib.suppress(OSError):
                pids.update(int(x) for x in procs.read_text().split())
        return sorted(pids)

    def reset_peaks(self) -> None:
        for side in ("client", "server"):
            for leaf in ("app", "proxy"):
                for pid in self.pids(side, leaf):
                    _reset_hwm(pid)
        for pid in node_proxy_pids(self.layout) if self.node_proxies else ():
            _reset_hwm(pid)

    def peaks(self) -> Peaks:
        def total(side: str, leaf: str) -> int:
            return sum(_vm_hwm_bytes(p) for p in self.pids(side, leaf))

        return Peaks(
            client_bytes=total("client", "proxy"),
            server_bytes=total("server", "proxy"),
            loadgen_bytes=total("client", "app"),
            app_bytes=total("server", "app"),
            node_proxy_bytes=sum(_vm_hwm_bytes(p) for p in node_proxy_pids(self.layout))
            if self.node_proxies
            else 0,
        )
