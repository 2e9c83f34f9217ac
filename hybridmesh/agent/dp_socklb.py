"""The socket-LB datapath: ``cgroup/connect4`` + ``getpeername4`` for ``kernel`` pods.

Wraps :class:`hybridmesh.ebpf.sock_lb.SockLB`: services and endpoints from the node state go
into its maps (every service of the lab: a connect may name any of them), and its programs
are attached to the cgroup of every local pod whose placement balances in the kernel. A pod
that leaves is detached; one whose cgroup vanished while the agent was down is unpinned.

Restart: :meth:`SockLB.load` reuses the pinned maps and replaces the program in every pinned
link atomically, so established connections (and their getpeername) never notice.
"""

from __future__ import annotations

import errno
import logging
import os
from ipaddress import IPv4Address
from pathlib import Path

from hybridmesh.agent.datapath import (
    Datapath,
    DatapathStatus,
    MapStatus,
    NodeState,
    ProgramStatus,
)
from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf._libbpf import BpfLink, prog_info
from hybridmesh.ebpf._libbpf_agent import pinned_map_info
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.ebpf.sock_lb import Service, SockLB

__all__ = ["PLACEMENTS", "SockLBDatapath", "create", "desired_services"]

log = logging.getLogger(__name__)

PLACEMENTS = ("kernel",)
"""Placements whose pods get socket LB. Never ``node``: the node proxy must see the ClusterIP a
node pod dialled (it balances itself), so nodesteer, not sock_lb, handles those connects."""

Backends = tuple[tuple[IPv4Address, int], ...]


def desired_services(state: NodeState) -> dict[Service, Backends]:
    """Every TCP service port with a cluster IP → its ready endpoints at the target port."""
    out: dict[Service, Backends] = {}
    for svc in state.services:
        if not svc.cluster_ip:
            continue
        for port in svc.ports:
            backends = tuple(sorted((IPv4Address(e.ip), port.target_port) for e in svc.endpoints))
            out[Service(IPv4Address(svc.cluster_ip), port.port, "tcp")] = backends
    return out


class SockLBDatapath(Datapath):
    name = "sock-lb"
    placements = frozenset(PLACEMENTS)

    def __init__(self, node: str, pin_dir: Path | None = None) -> None:
        self.node = node
        self.pin_dir = pin_dir or bpffs.pin_dir(f"hm-{node}-socklb")
        self._lb: SockLB | None = None
        self._applied: dict[Service, Backends] | None = None  # None: read back from the maps
        self._cgroups: dict[str, Path] = {}  # pod key -> cgroup we attached to

    def _loaded(self) -> SockLB:
        if self._lb is None:
            self._lb = SockLB.load(self.pin_dir)
        return self._lb

    # -- sync --------------------------------------------------------------------------
    def sync(self, state: NodeState) -> None:
        lb = self._loaded()
        self._sync_services(lb, desired_services(state))
        wanted = {p.key: p.cgroup for p in state.local(*PLACEMENTS) if p.cgroup is not None}
        for cgroup in wanted.values():
            lb.attach(cgroup)  # idempotent; refreshes the program on an existing link
        keep = {cgroup_id(c) for c in wanted.values()}
        for stale in set(lb.attached()) - keep:
            _detach_id(lb.pin_dir, stale)
        self._cgroups = wanted

    def _sync_services(self, lb: SockLB, desired: dict[Service, Backends]) -> None:
        if self._applied is None:
            current = lb.services()
            self._applied = {s: tuple(sorted(b)) for s, b in current.items()}
        for service, backends in desired.items():
            if self._applied.get(service) != backends:
                lb.set_service(service.vip, service.port, backends, service.protocol)
        for service in set(self._applied) - set(desired):
            lb.delete_service(service.vip, service.port, service.protocol)
        self._applied = dict(desired)

    # -- status ------------------------------------------------------------------------
    def status(self) -> DatapathStatus:
        lb = self._loaded()
        where = f"on {len(lb.attached())} cgroups"
        programs = []
        for hook, program in lb.programs.items():
            info = prog_info(program.fd)
            programs.append(ProgramStatus(program.name,
                                          f"cgroup/{hook} {where}", info.id, info.run_cnt,
                                          info.run_time_ns))  # fmt: skip
        stats = lb.stats()
        services = lb.services()
        maps = (
            MapStatus("services", "hash", len(services), _max_entries(lb, "services"),
                      lb.pin_dir / "services"),
            MapStatus("backends", "hash", sum(len(b) for b in services.values()),
                      _max_entries(lb, "backends"), lb.pin_dir / "backends"),
            MapStatus("revnat", "lru_hash", sum(1 for _ in lb.revnat_map.keys()),  # noqa: SIM118
                      _max_entries(lb, "revnat"), lb.pin_dir / "revnat"),
            MapStatus("stats", "percpu_array", None, _max_entries(lb, "stats"),
                      lb.pin_dir / "stats"),
        )  # fmt: skip
        detail = {
            "connects": sum(s.connects for s in stats.values()),
            "noBackend": sum(s.no_backend for s in stats.values()),
            "services": {str(svc): {"connects": st.connects, "noBackend": st.no_backend,
                                    "backends": len(services.get(svc, ()))}
                         for svc, st in sorted(stats.items())},
            "pods": sorted(self._cgroups),
        }  # fmt: skip
        return DatapathStatus(self.name, tuple(programs), maps, detail)

    # -- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        if self._lb is not None:
            self._lb.close()
            self._lb = None
        self._applied = None

    def remove(self) -> None:
        self.close()
        SockLB.remove(self.pin_dir)


def _max_entries(lb: SockLB, name: str) -> int:
    return pinned_map_info(lb.pin_dir / name).max_entries


def cgroup_id(cgroup: Path) -> int:
    """The cgroup v2 id: the directory's inode number (what the link pins are named by)."""
    return os.stat(cgroup).st_ino


def _detach_id(pin_dir: Path, cgroup: int) -> None:
    """Detach and unpin the links of a cgroup we no longer serve (severed ones just unpin)."""
    for pin in sorted(pin_dir.glob(f"link-*-{cgroup}")):
        link = BpfLink.open(pin)
        try:
            try:
                link.detach()
            except BpfError as exc:
                if exc.errno != errno.ENOLINK:
                    raise
            link.unpin()
        finally:
            link.destroy()


def create(node: str) -> Datapath:
    return SockLBDatapath(node)
