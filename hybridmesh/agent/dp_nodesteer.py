"""The nodesteer datapath: steering of ``node`` pods' TCP to the node proxy.

Wraps :class:`hybridmesh.ebpf.nodesteer.NodeSteer`. Its programs are attached to the cgroup of
every local pod with ``placement: node``; the node proxy's outbound listener (the node's bridge
address, ``NodeState.gateway``, port 15001) is compiled into them. The agent fills the gateway;
when it does not, the first host of ``pod_cidr`` is the lab's gateway by construction.

Services are not balanced here: the node proxy receives the VIP as the original destination and
balances itself, which is why sock-lb stays off ``node`` pods (a rewrite there would hand the
proxy a backend instead of the service).

Restart: :meth:`NodeSteer.load` reuses the pinned maps and points every pinned link at the new
programs atomically; a changed gateway reloads the same way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from hybridmesh.agent.datapath import (
    Datapath,
    DatapathStatus,
    MapStatus,
    NodeState,
    PodView,
    ProgramStatus,
)
from hybridmesh.ebpf import _libbpf, bpffs
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.ebpf.nodesteer import MAX_PODS, MAX_SRC, SRC_MAP, Counters, NodeSteer

__all__ = ["PLACEMENTS", "PROXY_PORT", "NodeSteerDatapath", "create", "proxy_address"]

log = logging.getLogger(__name__)

PLACEMENTS = ("node",)
PROXY_PORT = 15001  # the node proxy's outbound listener (Istio's sidecar outbound habit)
_WHERE = {"connect4": "cgroup/connect4", "connect6": "cgroup/connect6 (v4-mapped)",
          "getpeername4": "cgroup/getpeername4", "getpeername6": "cgroup/getpeername6",
          "sockops": "cgroup/sock_ops"}  # fmt: skip


class _Steer(Protocol):
    """What the datapath uses of :class:`NodeSteer` (a fake stands in for it in unit tests)."""

    def attach(self, cgroup: Path) -> None: ...
    def attached(self) -> list[int]: ...
    def detach(self, cgroup: Path | int | None = None) -> None: ...
    def pod_cgroups(self) -> set[int]: ...
    def close(self) -> None: ...


Loader = Callable[[Path, tuple[str, int]], _Steer]


def proxy_address(state: NodeState, port: int = PROXY_PORT) -> tuple[str, int] | None:
    """Where steered connections go: the gateway, else the first host of the pod CIDR."""
    if state.gateway:
        return (state.gateway, port)
    if state.pod_cidr:
        network = ipaddress.ip_network(state.pod_cidr, strict=False)
        return (str(next(network.hosts())), port)
    return None


def _cgroup_ids(cgroups: Iterable[Path]) -> set[int]:
    """Inode numbers of the cgroups that still exist."""
    ids = set()
    for cgroup in cgroups:
        with contextlib.suppress(OSError):
            ids.add(os.stat(cgroup).st_ino)
    return ids


def _load(pin_dir: Path, proxy: tuple[str, int]) -> _Steer:
    return NodeSteer.load(pin_dir, proxy)


class NodeSteerDatapath(Datapath):
    """Node steering for one node; the object loads on the first sync that knows the proxy."""

    name = "nodesteer"

    def __init__(self, node: str, pin_dir: Path | None = None, loader: Loader = _load) -> None:
        self.node = node
        self.pin_dir = pin_dir or bpffs.pin_dir(f"hm-{node}-nodesteer")
        self._loader = loader
        self._steer: _Steer | None = None
        self._proxy: tuple[str, int] | None = None
        self._pods: list[str] = []
        self._failed: dict[str, str] = {}
        self._error: str | None = None

    def _loaded(self, proxy: tuple[str, int]) -> _Steer:
        """The loaded object for ``proxy``; a new proxy address reloads (links re-bound)."""
        if self._steer is None or self._proxy != proxy:
            steer = self._loader(self.pin_dir, proxy)
            if self._steer is not None:
                self._steer.close()
            self._steer, self._proxy = steer, proxy
        return self._steer

    def sync(self, state: NodeState) -> None:
        pods = [(p, p.cgroup) for p in state.local(*PLACEMENTS) if p.cgroup is not None]
        proxy = proxy_address(state)
        if proxy is None:
            self._error = "the node state has neither gateway nor pod CIDR: no proxy to steer to"
            if pods:
                log.warning("nodesteer: %s (%d node pods unsteered)", self._error, len(pods))
            return
        self._error = None
        steer = self._loaded(proxy)
        self._attach(steer, pods)
        keep = _cgroup_ids(cgroup for _, cgroup in pods)
        for stale in (set(steer.attached()) | steer.pod_cgroups()) - keep:
            steer.detach(stale)

    def _attach(self, steer: _Steer, pods: list[tuple[PodView, Path]]) -> None:
        attached, failed = [], {}
        for pod, cgroup in pods:
            try:
                steer.attach(cgroup)
                attached.append(pod.key)
            except BpfError as exc:  # e.g. the cgroup went away since the snapshot
                log.warning("nodesteer: cannot attach to %s: %s", pod.key, exc)
                failed[pod.key] = exc.message
        self._pods, self._failed = sorted(attached), failed

    def status(self) -> DatapathStatus:
        detail = {
            "proxy": f"{self._proxy[0]}:{self._proxy[1]}" if self._proxy else None,
            "pods": self._pods,
            "failed": dict(self._failed),
            "error": self._error,
        }
        steer = self._steer
        if not isinstance(steer, NodeSteer):
            return DatapathStatus(self.name, detail=detail)
        cgroups = len(steer.attached())
        programs = []
        for hook, program in steer.programs.items():
            info = _libbpf.prog_info(program.fd)
            programs.append(ProgramStatus(program.name, f"{_WHERE[hook]} on {cgroups} cgroups",
                                          info.id, info.run_cnt, info.run_time_ns))  # fmt: skip
        pins = self.pin_dir
        pins_pods = pins / "pod_cgroups"
        maps = (
            MapStatus(SRC_MAP, "lru_hash", len(steer.entries()), MAX_SRC, pins / SRC_MAP),
            MapStatus("pod_cgroups", "hash", len(steer.pod_cgroups()), MAX_PODS, pins_pods),
            MapStatus("steer_state", "sk_storage", None, 0, pins / "steer_state"),
            MapStatus("stats", "percpu_array", None, 1, pins / "stats"),
        )
        counters: Counters = steer.counters()
        return DatapathStatus(self.name, tuple(programs), maps, {**detail, **counters.to_json()})

    def close(self) -> None:
        if self._steer is not None:
            self._steer.close()
            self._steer = None
            self._proxy = None

    def remove(self) -> None:
        """Detach from every pod and delete the pins (a node proxy holding ``hm_node_src``
        open must be restarted to see the next one)."""
        self.close()
        NodeSteer.remove(self.pin_dir)


def create(node: str) -> Datapath:
    return NodeSteerDatapath(node)
