"""The flows datapath: TCP flow open/close/retransmit events of local pods for ``observe``.

Wraps :class:`hybridmesh.ebpf.flows.Flows`. ``sync`` keeps the kernel's ``local`` map equal to
this node's pods — (netns inode, address), since the tracepoints see every namespace on the
machine and other labs may reuse our addresses — and ``drain_events`` turns the ring buffer's
records into :class:`FlowEvent` values oriented client → server.

One connection between two pods of this node is seen by both its sockets; the accepting side's
open and close are dropped then (the connecting side reports the same connection, with the
same bytes). Retransmits are kept from either side: each is its own sender's.

Restart: :meth:`Flows.load` reuses the pinned maps (flows opened before keep their start time)
and the pinned ring buffer (records written while no agent ran are read by the next one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from hybridmesh.agent.datapath import (
    Datapath,
    DatapathStatus,
    FlowEvent,
    MapStatus,
    NodeState,
    PodView,
    ProgramStatus,
)
from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf._libbpf import prog_info
from hybridmesh.ebpf._libbpf_flows import max_entries
from hybridmesh.ebpf.flows import Flow, Flows, realtime_offset_ns

__all__ = ["PLACEMENTS", "FlowsDatapath", "create", "desired_local", "events_of", "to_event"]

log = logging.getLogger(__name__)

PLACEMENTS = ("kernel", "sidecar+ebpf", "sidecar", "node")
"""Placements whose pods' flows are reported (``none`` is the baseline: nothing of ours)."""

_ATTACH = {
    "hm_flow_state": "tp_btf/inet_sock_set_state",
    "hm_flow_retransmit": "tp_btf/tcp_retransmit_skb",
}
_MAP_KINDS = {
    "local": "hash",
    "tracked": "lru_hash",
    "stats": "percpu_array",
    "control": "array",
    "events": "ringbuf",
}


def _netns_inode(pod: PodView) -> int | None:
    """The pod's netns inode; 0 (any namespace) when unknown, None when it is already gone."""
    if pod.netns is None:
        return 0
    try:
        return os.stat(pod.netns).st_ino
    except OSError as exc:
        log.info("flows: pod %s: netns %s: %s (skipped)", pod.key, pod.netns, exc.strerror)
        return None


def desired_local(state: NodeState) -> set[tuple[int, str]]:
    """(netns inode, address) of every local pod whose placement is reported."""
    wanted = set()
    for pod in state.local(*PLACEMENTS):
        inode = _netns_inode(pod)
        if inode is not None and pod.ip:
            wanted.add((inode, pod.ip))
    return wanted


def to_event(flow: Flow, offset_ns: int, node: str) -> FlowEvent:
    """A record as a FlowEvent, source = the connecting side; application bytes (no SYN/FIN)
    from the source's point of view."""
    local, remote = (flow.local_ip, flow.local_port), (flow.remote_ip, flow.remote_port)
    (src_ip, src_port), (dst_ip, dst_port) = (remote, local) if flow.passive else (local, remote)
    sent, received = flow.payload
    if flow.passive:
        sent, received = received, sent
    return FlowEvent(
        time_ns=flow.monotonic_ns + offset_ns,
        kind=flow.kind,
        src_ip=src_ip,
        src_port=src_port,
        dst_ip=dst_ip,
        dst_port=dst_port,
        bytes_sent=sent,
        bytes_received=received,
        rtt_us=flow.srtt_us or None,
        retransmits=flow.total_retrans,
        node=node,
    )


def events_of(
    flows: Iterable[Flow], offset_ns: int, node: str, local_ips: frozenset[str]
) -> list[FlowEvent]:
    """Events for ``flows``, without the accepting side of connections between local pods."""
    return [
        to_event(f, offset_ns, node)
        for f in flows
        if not (f.passive and f.kind != "retransmit" and f.remote_ip in local_ips)
    ]


class FlowsDatapath(Datapath):
    name = "flows"
    placements = frozenset(PLACEMENTS)
    gates_pods = False  # observability never holds an app back (its first flows may go unseen)

    def __init__(self, node: str, pin_dir: Path | None = None, shared: Path | None = None) -> None:
        self.node = node
        self.pin_dir = pin_dir or bpffs.pin_dir(f"hm-{node}-flows")
        self.shared_dir = shared or bpffs.pin_dir(f"hm-{node}-shared")  # sockmap's byte counts
        self._flows: Flows | None = None
        self._local_ips: frozenset[str] = frozenset()
        self._pods: tuple[str, ...] = ()

    def _loaded(self) -> Flows:
        if self._flows is None:
            self._flows = Flows.load(self.pin_dir, shared_dir=self.shared_dir)
        return self._flows

    def sync(self, state: NodeState) -> None:
        flows = self._loaded()
        wanted = desired_local(state)
        flows.set_local(wanted)
        self._local_ips = frozenset(ip for _, ip in wanted)
        self._pods = tuple(sorted(p.key for p in state.local(*PLACEMENTS)))

    def drain_events(self) -> list[FlowEvent]:
        if self._flows is None:
            return []
        records = self._flows.consume()
        return events_of(records, realtime_offset_ns(), self.node, self._local_ips)

    def status(self) -> DatapathStatus:
        flows = self._loaded()
        programs = []
        for name, program in flows.programs.items():
            info = prog_info(program.fd)
            programs.append(
                ProgramStatus(name, _ATTACH[name], info.id, info.run_cnt, info.run_time_ns)
            )
        maps = tuple(self._map_status(flows, name) for name in _MAP_KINDS)
        counters = flows.counters()
        detail = {
            "events": counters.events,
            "lost": counters.lost,
            "retransmits": counters.retransmits,
            "generation": flows.generation,
            "pods": list(self._pods),
        }
        return DatapathStatus(self.name, tuple(programs), maps, detail)

    @staticmethod
    def _map_status(flows: Flows, name: str) -> MapStatus:
        bpf_map = flows.map(name)
        entries: int | None = None
        if name == "local":
            entries = len(flows.local())
        elif name == "tracked":
            entries = sum(1 for _ in flows.tracked_map.keys())  # noqa: SIM118
        return MapStatus(name, _MAP_KINDS[name], entries, max_entries(bpf_map), flows.pin(name))

    def close(self) -> None:
        if self._flows is not None:
            self._flows.close()
            self._flows = None

    def remove(self) -> None:
        self.close()
        Flows.remove(self.pin_dir)


def create(node: str) -> Datapath:
    return FlowsDatapath(node)
