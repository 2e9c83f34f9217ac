"""Per-pod cgroups on whatever cgroup layout the host has: pure v2, pure v1 or hybrid.

Which hierarchy provides ``cpu``, ``cpuacct``, ``memory`` and ``pids`` is *detected* from
/proc/self/mountinfo and the v2 root's ``cgroup.controllers``, never assumed: on a hybrid host
(systemd's "hybrid" mode) cgroup2 is mounted at e.g. /sys/fs/cgroup/unified with no resource
controllers, while cpu and memory live on v1 hierarchies. A controller enabled in the v2 root
is used from v2; otherwise from its v1 mount.

Every pod gets ``hm-lab/hm-pod-<ns>-<pod>`` in the v2 hierarchy (where cgroup eBPF programs
attach, whatever serves the controllers) and in each hierarchy serving a controller above,
with two leaves, ``app`` and ``proxy``, so the application and its sidecar are accounted
separately while limits apply to the pod as a whole (like a Kubernetes pod's cgroup).
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hybridmesh.control.model import Limits
from hybridmesh.env import CGROUP_ROOT, LAB_CGROUP
from hybridmesh.lab._sh import LabError
from hybridmesh.lab.names import DAEMON_CGROUP, pod_cgroup

__all__ = [
    "CONTROLLERS",
    "LEAVES",
    "CgroupLayout",
    "CgroupMount",
    "PodCgroup",
    "PodUsage",
    "build_layout",
    "daemon_procs_files",
    "detect_layout",
    "parse_mountinfo",
]

LEAVES = ("app", "proxy")
"""Leaf cgroups of a pod; processes live only in leaves (cgroup v2's no-internal-process rule)."""

CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
_V2_ENABLE = ("cpu", "memory", "pids")  # cpuacct is not a v2 controller: cpu.stat is core
CFS_PERIOD_US = 100_000
_MIN_QUOTA_US = 1_000  # the kernel refuses quotas below 1ms


@dataclass(frozen=True, slots=True)
class CgroupMount:
    """One cgroup filesystem mount from mountinfo."""

    path: Path
    version: int  # 1 or 2
    options: frozenset[str]  # v1: the controllers (and name=...) from the super options


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    """Where each controller lives on this host."""

    v2: Path
    controllers: Mapping[str, Path]  # controller -> root of the hierarchy providing it
    v1_mounts: tuple[Path, ...] = ()  # every v1 hierarchy, controllers or not (for the sweep)

    def is_v2(self, controller: str) -> bool:
        return self.controllers.get(controller) == self.v2

    @property
    def hierarchies(self) -> tuple[Path, ...]:
        """Roots a lab process joins: v2 first, then each distinct controller hierarchy."""
        roots = [self.v2]
        roots += [p for p in self.controllers.values() if p not in roots]
        return tuple(dict.fromkeys(roots))

    @property
    def all_roots(self) -> tuple[Path, ...]:
        """Every mounted hierarchy, including ones the lab doesn't use (the sweep checks all)."""
        return tuple(dict.fromkeys((self.v2, *self.v1_mounts)))

    def controller_dir(self, controller: str, relative: Path) -> Path:
        root = self.controllers.get(controller)
        if root is None:
            raise LabError(
                f"no cgroup hierarchy provides the {controller!r} controller",
                "mount it (cgroup v1) or enable it in the cgroup2 root's cgroup.subtree_control",
            )
        return root / relative


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts in a /proc/<pid>/mountinfo text (see proc(5))."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        version = 2 if tail[0] == "cgroup2" else 1
        options = frozenset(tail[2].split(",")) if version == 1 else frozenset()
        mounts.append(CgroupMount(Path(_unescape(fields[4])), version, options))
    return mounts


def _preference(mount: CgroupMount) -> tuple[bool, int]:
    """Prefer mounts under CGROUP_ROOT, then the shortest path (bind mounts come later)."""
    return (not mount.path.is_relative_to(CGROUP_ROOT), len(mount.path.parts))


def build_layout(mounts: Sequence[CgroupMount], v2_controllers: Iterable[str]) -> CgroupLayout:
    """Decide which hierarchy serves each controller: v2 if enabled there, else its v1 mount."""
    ordered = sorted(mounts, key=_preference)
    v2 = next((m.path for m in ordered if m.version == 2), None)
    if v2 is None:
        raise LabError(
            "cgroup v2 is not mounted (the lab's pods and eBPF programs need it)",
            "mount it: mount -t cgroup2 none /sys/fs/cgroup/unified",
        )
    enabled = set(v2_controllers)
    controllers: dict[str, Path] = {}
    for name in CONTROLLERS:
        v1 = next((m.path for m in ordered if m.version == 1 and name in m.options), None)
        if name in enabled or (v1 is None and name == "cpuacct"):
            controllers[name] = v2
        elif v1 is not None:
            controllers[name] = v1
    v1_all = tuple(dict.fromkeys(m.path for m in ordered if m.version == 1))
    return CgroupLayout(v2=v2, controllers=controllers, v1_mounts=v1_all)


def detect_layout(mountinfo: Path = Path("/proc/self/mountinfo")) -> CgroupLayout:
    """The layout of this host, read from the kernel."""
    mounts = parse_mountinfo(mountinfo.read_text())
    v2 = next((m.path for m in sorted(mounts, key=_preference) if m.version == 2), None)
    enabled = (v2 / "cgroup.controllers").read_text().split() if v2 else []
    return build_layout(mounts, enabled)


@dataclass(frozen=True, slots=True)
class PodUsage:
    """Resource use of a pod since its cgroup was created."""

    cpu_usec: int  # whole pod
    memory_bytes: int  # current, whole pod
    memory_peak_bytes: int
    cpu_usec_by_leaf: Mapping[str, int] = field(default_factory=dict)  # "app", "proxy"


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise LabError(f"cannot write {value!r} to {path}: {exc.strerror}") from None


def _read_int(path: Path) -> int:
    return int(path.read_text().split()[0])


def _cpu_stat_usec(path: Path) -> int:
    for line in (path / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    return 0


class PodCgroup:
    """The cgroups of one pod, across every hierarchy the layout uses."""

    def __init__(self, namespace: str, pod: str, layout: CgroupLayout) -> None:
        self.namespace = namespace
        self.pod = pod
        self.layout = layout
        self.relative = Path(LAB_CGROUP, pod_cgroup(namespace, pod))

    @property
    def v2_path(self) -> Path:
        """The pod's cgroup2 directory: where cgroup/connect4, sockops etc. attach."""
        return self.layout.v2 / self.relative

    def dirs(self) -> list[Path]:
        """The pod-level directory in each hierarchy."""
        return [root / self.relative for root in self.layout.hierarchies]

    def create(self, limits: Limits | None = None) -> None:
        """Make the pod and leaf cgroups everywhere (idempotent), then apply ``limits``."""
        for root in self.layout.hierarchies:
            for leaf in LEAVES:
                (root / self.relative / leaf).mkdir(parents=True, exist_ok=True)
        self._enable_v2_controllers()
        self.set_limits(limits or Limits())

    def _enable_v2_controllers(self) -> None:
        wanted = [c for c in _V2_ENABLE if self.layout.is_v2(c)]
        if not wanted:
            return
        line = " ".join(f"+{c}" for c in wanted)
        for level in (Path(), Path(LAB_CGROUP), self.relative):
            _write(self.layout.v2 / level / "cgroup.subtree_control", line)

    def set_limits(self, limits: Limits) -> None:
        """CPU (CFS bandwidth) and memory limits on the pod level; ``None`` removes a limit."""
        self._set_cpu(limits.cpu_millis)
        self._set_memory(limits.memory_bytes)

    def _set_cpu(self, millis: int | None) -> None:
        if millis is None and "cpu" not in self.layout.controllers:
            return
        cpu = self.layout.controller_dir("cpu", self.relative)
        quota = None if millis is None else max(_MIN_QUOTA_US, millis * CFS_PERIOD_US // 1000)
        if self.layout.is_v2("cpu"):
            _write(cpu / "cpu.max", f"{quota or 'max'} {CFS_PERIOD_US}")
        else:
            _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(quota or -1))

    def _set_memory(self, limit: int | None) -> None:
        if limit is None and "memory" not in self.layout.controllers:
            return
        memory = self.layout.controller_dir("memory", self.relative)
        if self.layout.is_v2("memory"):
            _write(memory / "memory.max", str(limit or "max"))
        else:
            _write(memory / "memory.limit_in_bytes", str(limit or -1))

    def procs_files(self, leaf: str = "app") -> list[Path]:
        """Every ``cgroup.procs`` a process of ``leaf`` must be written to, one per hierarchy."""
        if leaf not in LEAVES:
            raise LabError(f"unknown pod cgroup leaf {leaf!r}", f"use one of {', '.join(LEAVES)}")
        return [d / leaf / "cgroup.procs" for d in self.dirs()]

    def usage(self) -> PodUsage:
        """CPU time per leaf and in total, memory now and at peak. Raises OSError if absent."""
        by_leaf = {leaf: self._cpu_usec(self.relative / leaf) for leaf in LEAVES}
        memory = self.layout.controller_dir("memory", self.relative)
        if self.layout.is_v2("memory"):
            current = _read_int(memory / "memory.current")
            peak_file = memory / "memory.peak"  # Linux 5.19+
            peak = _read_int(peak_file) if peak_file.exists() else current
        else:
            current = _read_int(memory / "memory.usage_in_bytes")
            peak = _read_int(memory / "memory.max_usage_in_bytes")
        total = self._cpu_usec(self.relative)
        return PodUsage(total, current, peak, by_leaf)

    def _cpu_usec(self, relative: Path) -> int:
        path = self.layout.controller_dir("cpuacct", relative)
        if self.layout.is_v2("cpuacct"):
            return _cpu_stat_usec(path)
        return _read_int(path / "cpuacct.usage") // 1000

    def pids(self) -> list[int]:
        """Every process in the pod (any leaf, any hierarchy), sorted."""
        found: set[int] = set()
        for d in self.dirs():
            for procs in [d / "cgroup.procs", *(d / leaf / "cgroup.procs" for leaf in LEAVES)]:
                found.update(_read_pids(procs))
        return sorted(found)

    def remove(self, timeout: float = 2.0) -> None:
        """Delete the pod's cgroups (leaves first). Waits up to ``timeout`` for exiting
        processes; raises LabError if some are still there."""
        deadline = time.monotonic() + timeout
        for d in self.dirs():
            for path in [*(d / leaf for leaf in LEAVES), d]:
                _rmdir_waiting(path, deadline)


def _read_pids(procs: Path) -> list[int]:
    try:
        return [int(x) for x in procs.read_text().split()]
    except FileNotFoundError:
        return []


def _rmdir_waiting(path: Path, deadline: float) -> None:
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                pids = _read_pids(path / "cgroup.procs")
                raise LabError(
                    f"cannot remove cgroup {path}: {exc.strerror} (processes: {pids or 'none'})",
                    "stop the pod's processes first, or run `hybridmesh lab down`",
                ) from None
            time.sleep(0.02)


def daemon_procs_files(layout: CgroupLayout | None = None) -> list[Path]:
    """Create ``hm-lab/hm-daemon`` in every hierarchy the lab uses; its ``cgroup.procs`` files.

    The daemon lives in a lab cgroup so the sweep finds it, and outside any pod so pod
    accounting stays clean.
    """
    files = []
    for root in (layout or detect_layout()).hierarchies:
        path = root / LAB_CGROUP / DAEMON_CGROUP
        path.mkdir(parents=True, exist_ok=True)
        files.append(path / "cgroup.procs")
    return files
