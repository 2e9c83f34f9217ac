"""The L4 policy datapath: identity-based AuthorizationPolicy for ``kernel`` and ``node`` pods.

``node`` pods are enforced too (defence in depth, docs/node.md §4): their mesh traffic arrives
from the node proxy (the node's address, admitted like the node's probes; the proxy already
authorized it by the caller's SVID), while plaintext from pods without a proxy (``kernel``,
``none``) meets the same rules here, judged by the caller's numeric identity.

Wraps :class:`hybridmesh.ebpf.l4policy.L4Policy`. Each sync compiles the node state
(:func:`hybridmesh.ebpf.l4compile.compile_state`: identities of every pod, rules for this node's
enforced pods), writes the maps *before* attaching to new pods' cgroups (so a pod's first
SYN already meets its rules), and detaches from pods that left or changed placement. The
loader bumps the shared policy epoch after every change, which re-judges established
connections here and sends sockmap's accelerated ones back through the stack.

An invalid policy set keeps the previous tables (fail-static: the kernel goes on enforcing the
last good state) and shows the error in ``status``.

Drops come back from :meth:`drain_events` as ``FlowEvent(kind="drop", verdict="DROPPED",
policy="ns/name")``: the DENY policy that matched, or — for default-deny — the first ALLOW
policy that selects the destination.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import time
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
from hybridmesh.ebpf._libbpf import BpfProgram, prog_info
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.ebpf.l4compile import ENFORCED_PLACEMENTS, L4Plan, compile_state
from hybridmesh.ebpf.l4policy import (
    EPOCH_MAP,
    MAX_FLOWS,
    MAX_IPS,
    MAX_RULES,
    RING_BYTES,
    DropEvent,
    L4Policy,
)
from hybridmesh.policy import PolicyError

__all__ = ["PLACEMENTS", "L4PolicyDatapath", "create", "drop_event", "node_addresses"]

log = logging.getLogger(__name__)

PLACEMENTS = (*ENFORCED_PLACEMENTS, "node")
"""Placements whose pods' cgroups get the L4 programs (and whose rules are compiled)."""
_MAX_PENDING = 10_000  # events kept between two drains (the ring is already rate-limited)


def drop_event(drop: DropEvent, names: dict[int, str], offset_ns: int, node: str) -> FlowEvent:
    """A kernel drop as ``observe`` shows it; ``offset_ns`` is CLOCK_REALTIME - MONOTONIC."""
    policy = names.get(drop.policy) if drop.policy else None
    if drop.policy and policy is None:
        policy = f"policy#{drop.policy}"  # removed before we read its drop
    return FlowEvent(
        time_ns=drop.monotonic_ns + offset_ns,
        kind="drop",
        src_ip=drop.src_ip,
        src_port=drop.src_port,
        dst_ip=drop.dst_ip,
        dst_port=drop.dst_port,
        verdict="DROPPED",
        policy=policy,
        node=node,
    )


def node_addresses(state: NodeState) -> list[str]:
    """This node's bridge address, where the lab's readiness probes (and the kubelet-like
    checks of a node) come from: rules admit it to every enforced pod.

    The node snapshot's ``gateway`` is the answer. Without one (a snapshot from an older
    control plane), the pod CIDR's first host; without either, the lab's addressing rule
    (``control.ipam``: each node's pods live in a /24 whose first address is the gateway)
    applied to the local pods' addresses — a guess kept only for that case.
    """
    if state.gateway is not None:
        return [state.gateway]
    if state.pod_cidr is not None:
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_network(state.pod_cidr, strict=False)[1])]
    gateways = set()
    for pod in state.local():
        with contextlib.suppress(ValueError):
            gateways.add(str(ipaddress.ip_network(f"{pod.ip}/24", strict=False)[1]))
    return sorted(gateways)


def _offset_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _cgroup_id(pod: PodView) -> int | None:
    with contextlib.suppress(OSError):
        if pod.cgroup is not None:
            return os.stat(pod.cgroup).st_ino
    return None


def _program_status(program: BpfProgram, where: str) -> ProgramStatus:
    info = prog_info(program.fd)
    return ProgramStatus(program.name, where, info.id, info.run_cnt, info.run_time_ns)


class L4PolicyDatapath(Datapath):
    """L4 policy for one node; the object loads on the first sync (or status)."""

    name = "l4policy"

    def __init__(self, node: str, pin_dir: Path | None = None, shared: Path | None = None) -> None:
        self.node = node
        self.pin_dir = pin_dir or bpffs.pin_dir(f"hm-{node}-l4policy")
        self.shared_dir = shared or bpffs.pin_dir(f"hm-{node}-shared")
        self._l4: L4Policy | None = None
        self._plan: L4Plan | None = None
        self._names: dict[int, str] = {}  # every policy id seen: late drops still resolve
        self._pods: list[str] = []
        self._failed: dict[str, str] = {}
        self._error: str | None = None
        self._pending: list[DropEvent] = []

    def _loaded(self) -> L4Policy:
        if self._l4 is None:
            self._l4 = L4Policy.load(self.pin_dir, self.shared_dir)
            self._l4.open_events(self._queue)
        return self._l4

    def _queue(self, drop: DropEvent) -> None:
        if len(self._pending) < _MAX_PENDING:
            self._pending.append(drop)

    def sync(self, state: NodeState) -> None:
        l4 = self._loaded()
        try:
            plan = compile_state(state, PLACEMENTS, node_addresses(state))
        except PolicyError as exc:
            log.warning("l4policy: keeping the previous tables: %s", exc)
            self._error = str(exc)
            return
        l4.apply(plan)
        self._error = None
        self._plan = plan
        self._names.update(plan.policies)
        self._attach(l4, state.local(*PLACEMENTS))

    def _attach(self, l4: L4Policy, pods: tuple[PodView, ...]) -> None:
        attached, failed, keep = [], {}, set()
        for pod in pods:
            if pod.cgroup is None:
                continue
            try:
                l4.attach(pod.cgroup)
                attached.append(pod.key)
            except BpfError as exc:  # e.g. the cgroup went away since the snapshot
                log.warning("l4policy: cannot attach to %s: %s", pod.key, exc)
                failed[pod.key] = exc.message
            number = _cgroup_id(pod)
            if number is not None:
                keep.add(number)
        for stale in set(l4.attached()) - keep:
            l4.detach(stale)
        self._pods, self._failed = sorted(attached), failed

    def drain_events(self) -> list[FlowEvent]:
        if self._l4 is None:
            return []
        self._l4.open_events(self._queue).consume()
        drops, self._pending = self._pending, []
        offset = _offset_ns()
        return [drop_event(d, self._names, offset, self.node) for d in drops]

    def status(self) -> DatapathStatus:
        l4 = self._loaded()
        on = f"on {len(l4.attached())} cgroups"
        programs = (
            _program_status(l4.program, f"cgroup_skb/ingress {on}"),
            _program_status(l4.egress_program, f"cgroup_skb/egress {on}"),
        )
        pins = self.pin_dir
        maps = (
            MapStatus("ipcache", "lpm_trie", len(l4.ipcache()), MAX_IPS, pins / "ipcache"),
            MapStatus("policy", "hash", len(l4.rules()), MAX_RULES, pins / "policy"),
            MapStatus("flows", "lru_hash", l4.flow_count(), MAX_FLOWS, pins / "flows"),
            MapStatus("stats", "percpu_array", None, 1, pins / "stats"),
            MapStatus("events", "ringbuf", None, RING_BYTES, pins / "events"),
            MapStatus("outbound", "sk_storage", None, 0, pins / "outbound"),
            MapStatus(EPOCH_MAP, "array", None, 1, self.shared_dir / EPOCH_MAP),
        )
        plan = self._plan
        detail = {
            **vars(l4.stats()),
            "policyEpoch": l4.epoch(),
            "identities": len(plan.identities) if plan else None,
            "policies": sorted(plan.policies.values()) if plan else [],
            "pods": self._pods,
            "failed": dict(self._failed),
            "error": self._error,
        }
        return DatapathStatus(self.name, programs, maps, detail)

    def close(self) -> None:
        if self._l4 is not None:
            self._l4.close()
            self._l4 = None

    def remove(self) -> None:
        """Detach and unpin. The shared epoch stays (sockmap's too; ``lab down`` sweeps it)."""
        self.close()
        L4Policy.remove(self.pin_dir)


def create(node: str) -> Datapath:
    return L4PolicyDatapath(node)
