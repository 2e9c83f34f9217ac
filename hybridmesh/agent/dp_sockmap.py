"""The sockmap datapath: socket-to-socket acceleration for ``kernel`` and ``sidecar+ebpf`` pods.

Wraps :class:`hybridmesh.ebpf.sockmap.SockMap`. Its sockops program is attached to the cgroup of
every local pod of those placements (the sidecar's ``proxy`` leaf is below the pod's cgroup, so
the app↔proxy hop over 127.0.0.1 is covered by the same attachment), and the addresses of the
same pods make up its local-address set: a connection is accelerated only when both of its
sockets are admitted, i.e. both ends are such pods on this node (or both loopback in one pod).

Pods of other placements stay out of the set on purpose: their sockets are never admitted, so a
connection to them would only pay for a peer lookup that always misses.

Restart: :meth:`SockMap.load` reuses the pinned sockhash (with every accelerated socket in it)
and re-binds the pinned sockops links to the new program; established connections keep flowing.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from hybridmesh.agent.datapath import (
    Datapath,
    DatapathStatus,
    MapStatus,
    NodeState,
    PodView,
    ProgramStatus,
)
from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf._libbpf import prog_info
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.ebpf.sockmap import BYTES_MAP, EPOCH_MAP, MAX_LOCAL_IPS, MAX_SOCKETS, SockMap

__all__ = ["PLACEMENTS", "SockMapDatapath", "create", "shared_dir"]

log = logging.getLogger(__name__)

PLACEMENTS = ("kernel", "sidecar+ebpf")


def shared_dir(node: str) -> Path:
    """Where the pins shared between this node's datapaths live (``hm_policy_epoch``)."""
    return bpffs.pin_dir(f"hm-{node}-shared")


def _cgroup_ids(pods: list[PodView]) -> set[int]:
    """Inode numbers of the pods' cgroups that still exist."""
    ids = set()
    for pod in pods:
        with contextlib.suppress(OSError):
            if pod.cgroup is not None:
                ids.add(os.stat(pod.cgroup).st_ino)
    return ids


class SockMapDatapath(Datapath):
    """Sockmap for one node; the object loads on the first sync (or status)."""

    name = "sockmap"
    placements = frozenset(PLACEMENTS)

    def __init__(self, node: str, pin_dir: Path | None = None, shared: Path | None = None) -> None:
        self.node = node
        self.pin_dir = pin_dir or bpffs.pin_dir(f"hm-{node}-sockmap")
        self.shared_dir = shared or shared_dir(node)
        self._sm: SockMap | None = None
        self._pods: list[str] = []  # keys of the pods attached at the last sync
        self._failed: dict[str, str] = {}  # pod key -> why its attach failed

    def _loaded(self) -> SockMap:
        if self._sm is None:
            self._sm = SockMap.load(self.pin_dir, self.shared_dir)
        return self._sm

    def sync(self, state: NodeState) -> None:
        sm = self._loaded()
        pods = [(p, p.cgroup) for p in state.local(*PLACEMENTS) if p.cgroup is not None]
        attached, failed = [], {}
        for pod, cgroup in pods:
            try:
                sm.attach(cgroup)
                attached.append(pod)
            except BpfError as exc:  # e.g. the cgroup went away since the snapshot
                log.warning("sockmap: cannot attach to %s: %s", pod.key, exc)
                failed[pod.key] = exc.message
        for stale in set(sm.attached()) - _cgroup_ids([p for p, _ in pods]):
            sm.detach(stale)
        sm.set_local_ips(p.ip for p in attached if p.ip)
        self._pods = sorted(p.key for p in attached)
        self._failed = failed

    def status(self) -> DatapathStatus:
        sm = self._loaded()
        where = {"sockops": f"cgroup/sock_ops on {len(sm.attached())} cgroups",
                 "sk_msg": "sk_msg verdict on sockhash sock_hash"}  # fmt: skip
        programs = []
        for hook, program in sm.programs.items():
            info = prog_info(program.fd)
            programs.append(ProgramStatus(program.name, where[hook], info.id, info.run_cnt,
                                          info.run_time_ns))  # fmt: skip
        pins, shared = self.pin_dir, self.shared_dir
        maps = (
            MapStatus("sock_hash", "sockhash", len(sm.sock_hash), MAX_SOCKETS, pins / "sock_hash"),
            MapStatus("peer_socks", "lru_hash", sm.tracked_peers(), MAX_SOCKETS,
                      pins / "peer_socks"),
            MapStatus("local_ips", "hash", len(sm.local_ips()), MAX_LOCAL_IPS, pins / "local_ips"),
            MapStatus("sock_state", "sk_storage", None, 0, pins / "sock_state"),
            MapStatus("stats", "percpu_array", None, 1, pins / "stats"),
            MapStatus(EPOCH_MAP, "array", None, 1, shared / EPOCH_MAP),
            MapStatus(BYTES_MAP, "lru_hash", len(sm.redirected()), MAX_SOCKETS, shared / BYTES_MAP),
        )
        detail = {
            **sm.counters().to_json(),
            "policyEpoch": sm.epoch(),
            "pods": self._pods,
            "failed": dict(self._failed),
        }
        return DatapathStatus(self.name, tuple(programs), maps, detail)

    def close(self) -> None:
        if self._sm is not None:
            self._sm.close()
            self._sm = None

    def remove(self) -> None:
        """Detach, put accelerated sockets back on TCP, unpin. The shared epoch stays (it is
        l4policy's too; ``lab down`` sweeps it with every hm- pin directory)."""
        self.close()
        SockMap.remove(self.pin_dir)


def create(node: str) -> Datapath:
    return SockMapDatapath(node)
