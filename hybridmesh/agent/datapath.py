"""The contract between the node agent and each eBPF feature it runs (a *datapath*).

The agent follows the control plane's node snapshot, turns it into a :class:`NodeState` and
hands that to every datapath's :meth:`Datapath.sync`. A datapath owns one kernel feature end to
end — its object file, its pins under ``<bpffs>/hm-<node>-<feature>/``, its attachments — and
nothing else, so features can be added, restarted and tested one at a time:

- ``sync`` is idempotent and declarative: bring the kernel to the state, attach to pods that
  appeared, detach from pods that left. It is called at start-up (after a restart, with maps and
  links already pinned: reuse them, replace programs through ``bpf_link__update_program`` — an
  agent restart must not interrupt an established connection) and after every snapshot.
- ``status`` reports programs (with kernel run time) and map fill levels for
  ``hybridmesh ebpf status``.
- ``drain_events`` returns what the feature's ring buffers delivered since the last call (flow
  records, policy drops); the agent stamps pod names on them and serves them to ``observe``.
- ``close`` releases this process's handles and keeps every pin: the next agent takes over.
  ``remove`` (cold start, ``lab down``) deletes the pins and detaches.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hybridmesh.control.model import ServiceInfo
from hybridmesh.resources.models import AuthorizationPolicy

__all__ = [
    "Datapath",
    "DatapathStatus",
    "FlowEvent",
    "MapStatus",
    "NodeState",
    "PodView",
    "ProgramStatus",
]

Placement = Literal["none", "sidecar", "sidecar+ebpf", "node", "kernel"]


@dataclass(frozen=True, slots=True)
class PodView:
    """A pod as a datapath needs it. ``cgroup``/``netns`` are set only for pods on this node."""

    namespace: str
    name: str
    ip: str
    node: str
    service_account: str
    placement: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ready: bool = False
    cgroup: Path | None = None  # the pod's cgroup v2 directory (unified hierarchy)
    netns: Path | None = None  # the pod's netns file, /run/netns/hm-pod-<ns>.<pod>

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def local(self) -> bool:
        return self.cgroup is not None


@dataclass(frozen=True, slots=True)
class NodeState:
    """Everything the control plane says about this node, in typed form.

    ``pods`` holds every pod in the lab (policy needs the addresses of remote sources too);
    :meth:`local` selects this node's.
    """

    node: str
    version: int
    pods: tuple[PodView, ...]
    services: tuple[ServiceInfo, ...]
    policies: tuple[AuthorizationPolicy, ...]
    trust_domain: str = "cluster.local"
    mtls_mode: str = "PERMISSIVE"
    pod_cidr: str | None = None  # this node's pod CIDR, e.g. "10.244.1.0/24"
    gateway: str | None = None  # the node's address on its pod bridge (node proxy listens here)

    def local(self, *placements: str) -> tuple[PodView, ...]:
        """This node's pods, optionally only those with one of ``placements``."""
        return tuple(
            p for p in self.pods if p.local and (not placements or p.placement in placements)
        )

    def pod_by_ip(self, ip: str) -> PodView | None:
        return next((p for p in self.pods if p.ip == ip), None)


@dataclass(frozen=True, slots=True)
class ProgramStatus:
    name: str  # the C function name, e.g. "hm_connect4"
    attach: str  # where: "cgroup/connect4 on 3 cgroups", "sk_lookup on hm-pod-a.b", ...
    prog_id: int
    run_cnt: int  # counts while kernel.bpf_stats_enabled (or BPF_ENABLE_STATS) is on
    run_time_ns: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "attach": self.attach,
            "id": self.prog_id,
            "runCount": self.run_cnt,
            "runTimeNs": self.run_time_ns,
        }


@dataclass(frozen=True, slots=True)
class MapStatus:
    name: str
    kind: str  # "hash", "lru_hash", "lpm_trie", "sockhash", "ringbuf", ...
    entries: int | None  # None where counting is not possible (ringbuf, arrays count as max)
    max_entries: int
    pin: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "entries": self.entries,
            "maxEntries": self.max_entries,
            "pin": str(self.pin) if self.pin else None,
        }


@dataclass(frozen=True, slots=True)
class DatapathStatus:
    name: str  # the datapath's name, e.g. "sock-lb"
    programs: tuple[ProgramStatus, ...] = ()
    maps: tuple[MapStatus, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)  # counters a datapath wants shown

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "programs": [p.to_json() for p in self.programs],
            "maps": [m.to_json() for m in self.maps],
            "detail": dict(self.detail),
        }


FlowKind = Literal["open", "close", "drop", "retransmit"]
Verdict = Literal["FORWARDED", "DROPPED"]


@dataclass(frozen=True, slots=True)
class FlowEvent:
    """One record for ``hybridmesh observe`` (Hubble's flow, reduced to TCP/IPv4).

    Datapaths fill what the kernel told them; the agent adds ``src_pod``/``dst_pod`` (``ns/name``)
    from the addresses before serving the event.
    """

    time_ns: int  # CLOCK_REALTIME nanoseconds (convert from bpf_ktime_get_ns in the datapath)
    kind: FlowKind
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    verdict: Verdict = "FORWARDED"
    policy: str | None = None  # "ns/name" of the policy that caused a drop (or allowed it)
    protocol: str = "TCP"
    bytes_sent: int = 0  # from the source's point of view (close records)
    bytes_received: int = 0
    rtt_us: int | None = None
    retransmits: int = 0
    node: str = ""
    src_pod: str | None = None
    dst_pod: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time_ns,
            "kind": self.kind,
            "verdict": self.verdict,
            "protocol": self.protocol,
            "source": {"ip": self.src_ip, "port": self.src_port, "pod": self.src_pod},
            "destination": {"ip": self.dst_ip, "port": self.dst_port, "pod": self.dst_pod},
            "policy": self.policy,
            "bytesSent": self.bytes_sent,
            "bytesReceived": self.bytes_received,
            "rttUs": self.rtt_us,
            "retransmits": self.retransmits,
            "node": self.node,
        }


class Datapath(abc.ABC):
    """One eBPF feature on one node. See the module docstring for the lifecycle."""

    name: str
    placements: frozenset[str] | None = None
    """The placements this datapath serves (None: every placement). A pod counts as programmed
    once every datapath serving its placement has synced it, so a broken feature holds back
    only the pods that need it."""

    gates_pods: bool = True
    """Whether a pod's app waits for this datapath. Enforcement and steering must be in place
    before the app's first connect; observability (flows) must never hold an app back."""

    def serves(self, placement: str) -> bool:
        return self.placements is None or placement in self.placements

    @abc.abstractmethod
    def sync(self, state: NodeState) -> None:
        """Make the kernel match ``state``; idempotent, cheap when nothing changed."""

    @abc.abstractmethod
    def status(self) -> DatapathStatus: ...

    def drain_events(self) -> list[FlowEvent]:
        """Events since the last call (non-blocking). Most datapaths have none."""
        return []

    @abc.abstractmethod
    def close(self) -> None:
        """Drop this process's handles; pins and attachments stay for the next agent."""

    @abc.abstractmethod
    def remove(self) -> None:
        """Detach everything and delete the pins (cold start, lab down)."""
