"""Probes for cgroups: where v2 is mounted, and where the cpu and memory controllers live.

The layout is detected, never assumed: on a *unified* host everything is v2; on a *hybrid* one
(systemd's old default, and this project's CI) v2 is mounted beside v1 hierarchies that own the
controllers; on a *legacy* one there is no v2 at all. The lab needs v2 for the eBPF socket
hooks and the cpu/memory controllers — from either version — for pod limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hybridmesh import env
from hybridmesh.doctor._mountinfo import Mount, parse_mountinfo
from hybridmesh.doctor.host import Session
from hybridmesh.doctor.model import Outcome

__all__ = ["CgroupLayout", "detect_layout", "probe_cgroup2", "probe_controllers"]

REQUIRED_CONTROLLERS = ("cpu", "memory")
_V1_CONTROLLERS = frozenset(
    {
        "blkio",
        "cpu",
        "cpuacct",
        "cpuset",
        "devices",
        "freezer",
        "hugetlb",
        "memory",
        "misc",
        "net_cls",
        "net_prio",
        "perf_event",
        "pids",
        "rdma",
    }
)


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    """Where cgroups are on this host: the v2 mount (if any) and the v1 controller hierarchies."""

    v2: Mount | None
    v1: tuple[Mount, ...]

    @property
    def name(self) -> str:
        if self.v2 is not None:
            return "hybrid" if self.v1 else "unified"
        return "legacy" if self.v1 else "none"

    def v2_controllers(self) -> frozenset[str]:
        """Controllers the v2 root offers; empty when none are (or the file is unreadable)."""
        if self.v2 is None:
            return frozenset()
        try:
            text = (Path(self.v2.mount_point) / "cgroup.controllers").read_text()
        except OSError:
            return frozenset()
        return frozenset(text.split())

    def locate(self, controller: str) -> str | None:
        """``"v2 at /sys/fs/cgroup"``-style location of ``controller``, or None if absent."""
        if self.v2 is not None and controller in self.v2_controllers():
            return f"v2 at {self.v2.mount_point}"
        for mount in self.v1:
            if controller in mount.super_options:
                return f"v1 at {mount.mount_point}"
        return None


def _preference(mount: Mount) -> tuple[bool, int]:
    """Prefer mounts under CGROUP_ROOT, then the shortest path — the lab's own choice, so the
    check reports the hierarchy the lab will actually use."""
    path = Path(mount.mount_point)
    return (not path.is_relative_to(env.CGROUP_ROOT), len(path.parts))


def detect_layout(mounts: list[Mount]) -> CgroupLayout:
    mounts = sorted(mounts, key=_preference)
    v2 = next((m for m in mounts if m.fstype == "cgroup2"), None)
    v1 = tuple(m for m in mounts if m.fstype == "cgroup" and m.super_options & _V1_CONTROLLERS)
    return CgroupLayout(v2, v1)


def _layout(session: Session) -> CgroupLayout:
    return detect_layout(parse_mountinfo(session.host.mountinfo.read_text()))


def probe_cgroup2(session: Session) -> Outcome:
    layout = _layout(session)
    if layout.v2 is None:
        return Outcome.failed(
            f"no cgroup2 mount in {session.host.mountinfo} ({layout.name} layout)"
        )
    return Outcome.passed(f"at {layout.v2.mount_point} ({layout.name} layout)")


def probe_controllers(session: Session) -> Outcome:
    layout = _layout(session)
    found = {c: layout.locate(c) for c in REQUIRED_CONTROLLERS}
    missing = [c for c, where in found.items() if where is None]
    if missing:
        return Outcome.failed(f"{layout.name} layout; not available: {', '.join(missing)}")
    places = ", ".join(f"{c} on {where}" for c, where in found.items())
    return Outcome.passed(f"{layout.name} layout: {places}")
