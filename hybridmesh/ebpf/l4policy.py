"""Identity-based L4 policy: the loader of ``bpf/l4policy.bpf.c``.

The program runs as cgroup_skb/ingress on each enforced pod's cgroup. Userspace owns three
tables (written from an :class:`~hybridmesh.ebpf.l4compile.L4Plan`): the ipcache (address →
identity), the policy map ((src, dst, port, proto) → verdict) and, in Python only, policy
id → ``ns/name`` for the drop events. After every change to the first two it bumps the shared
``hm_policy_epoch``: the program then recomputes each established connection's cached verdict
on its next packet, and sockmap sends accelerated connections back through the TCP stack.
A cgroup_skb/egress program marks the pod's own connects (socket storage, ``outbound``), so an
inbound segment with no cached verdict (evicted from the LRU, or accepted before the attach)
is judged by the policy, while replies to the pod's own connects pass.

What a dropped connection looks like to the client: the SYN is dropped in the server's
ingress hook, so there is no SYN-ACK and no RST — connect() retransmits and times out (or the
client's own timeout fires first). A connection cut by a policy change stalls the same way:
its further segments are dropped, the sender retransmits until its timeout.

Restart path (as ``sock_lb``): maps are reused from the pins (identities, rules, cached flow
verdicts and counters survive), pinned links get the new program via
``bpf_link__update_program``, so enforcement never has a gap.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from hybridmesh.ebpf import _libbpf
from hybridmesh.ebpf._l4layout import (
    DropEvent,
    Flow,
    FlowKey,
    Identity,
    IpKey,
    L4Stats,
    PolicyKey,
    PolicyValue,
    RawEvent,
    Stats,
    decode_event,
    ip_of,
    net32,
)
from hybridmesh.ebpf._libbpf import BpfObject, prog_info
from hybridmesh.ebpf._links import CgroupLinks, prepare_pin_dirs, remove_pins, sum_per_cpu
from hybridmesh.ebpf._shared import EPOCH_MAP, pin_shared, shared_fd
from hybridmesh.ebpf.btf import BtfKind, check_layout
from hybridmesh.ebpf.build import BPF_DIR
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.ebpf.l4compile import L4Plan, RuleKey, Verdict
from hybridmesh.ebpf.maps import Map, PerCpuMap
from hybridmesh.ebpf.sock_lb import ProgramStats

__all__ = [
    "EGRESS_PROGRAM",
    "EPOCH_MAP",
    "EVENT_INTERVAL_NS",
    "MAPS",
    "MAX_FLOWS",
    "MAX_IPS",
    "MAX_RULES",
    "OBJECT",
    "PROGRAM",
    "RING_BYTES",
    "DropEvent",
    "L4Policy",
    "L4Stats",
    "decode_event",
]

OBJECT = BPF_DIR / "l4policy.bpf.o"
PROGRAM = "hm_l4_ingress"
EGRESS_PROGRAM = "hm_l4_egress"  # marks the pod's own connects (bpf/l4policy.bpf.c)
MAPS = ("ipcache", "policy", "flows", "stats", "events", "outbound")
MAX_RULES = 65536  # HM_L4_MAX_RULES
MAX_IPS = 65536  # HM_L4_MAX_IPS
MAX_FLOWS = 131072  # HM_L4_MAX_FLOWS
RING_BYTES = 256 * 1024  # HM_L4_RING_BYTES
EVENT_INTERVAL_NS = 5_000_000_000
"""At most one drop event per flow per 5 s: a blocked connect's SYN retransmissions (1 s, 3 s,
7 s, ...) show up once or twice, a flood cannot fill the ring."""
_TCP = 6


def _policy_key(key: RuleKey) -> PolicyKey:
    return PolicyKey(key.src, key.dst, key.port, _TCP, 0)


def _rule_key(key: PolicyKey) -> RuleKey:
    return RuleKey(key.src, key.dst, key.port)


def _value(verdict: Verdict) -> PolicyValue:
    return PolicyValue(verdict.verdict, verdict.flags, 0, verdict.policy)


def _verdict(value: PolicyValue) -> Verdict:
    return Verdict(value.verdict, value.flags, value.policy)


# --- the loaded program -----------------------------------------------------------------------


class L4Policy:
    """The loaded l4policy object, its typed maps and its pinned cgroup links."""

    def __init__(self, obj: BpfObject, pin_dir: Path) -> None:
        self.pin_dir = pin_dir
        self._obj = obj
        self.ipcache_map = Map(obj.map("ipcache"), IpKey, Identity)
        self.policy_map = Map(obj.map("policy"), PolicyKey, PolicyValue)
        self.flows_map = Map(obj.map("flows"), FlowKey, Flow)
        self.stats_map = PerCpuMap(obj.map("stats"), ctypes.c_uint32, Stats)
        self._epoch_fd = shared_fd(obj, EPOCH_MAP)
        btf = obj.btf
        check_layout(RawEvent, btf, btf.find("hm_l4_event", BtfKind.STRUCT), "hm_l4_event")
        self.program = obj.program(PROGRAM)
        self.egress_program = obj.program(EGRESS_PROGRAM)
        self.links = CgroupLinks(pin_dir, "ingress")
        self.egress_links = CgroupLinks(pin_dir, "egress")
        self._ring: _libbpf.RingBuffer | None = None

    @classmethod
    def load(
        cls,
        pin_dir: Path,
        shared_dir: Path,
        obj_path: Path = OBJECT,
        event_interval_ns: int = EVENT_INTERVAL_NS,
    ) -> L4Policy:
        """Load, reusing maps pinned in ``pin_dir`` (the epoch in ``shared_dir``), and give
        every pinned link the new program."""
        prepare_pin_dirs(pin_dir, shared_dir)
        obj = BpfObject.open(obj_path)
        try:
            obj.set_rodata("event_interval_ns", ctypes.c_uint64(event_interval_ns))
            for name in MAPS:
                obj.map(name).set_pin_path(pin_dir / name)
            pin_shared(obj, shared_dir, EPOCH_MAP)
            obj.load()
            loaded = cls(obj, pin_dir)
            loaded.egress_links.rebind(loaded.egress_program)
            loaded.links.rebind(loaded.program)
        except BaseException:
            obj.close()
            raise
        return loaded

    # links -------------------------------------------------------------------------------

    def attach(self, cgroup: Path) -> None:
        """Enforce on ``cgroup`` (a cgroup v2 directory) and its descendants. Idempotent.
        Egress first: once ingress judges, the pod's own connects must already be marked."""
        self.egress_links.attach(self.egress_program, cgroup)
        self.links.attach(self.program, cgroup)

    def attached(self) -> list[int]:
        """Cgroup ids (inode numbers) with a pinned link."""
        return self.links.attached()

    def detach(self, cgroup: Path | int | None = None) -> None:
        """Stop enforcing on ``cgroup`` (a directory or a cgroup id; every cgroup when None)."""
        self.links.detach(cgroup)
        self.egress_links.detach(cgroup)

    # tables ------------------------------------------------------------------------------

    def apply(self, plan: L4Plan) -> bool:
        """Make the ipcache and the policy map hold ``plan``; bump the epoch if anything
        changed. Writes go before deletes, so a destination is never briefly without its rules.
        Returns whether anything changed."""
        if len(plan.rules) > MAX_RULES or len(plan.ipcache) > MAX_IPS:
            raise BpfError(
                f"l4policy plan has {len(plan.rules)} rules and {len(plan.ipcache)} addresses "
                f"(limits {MAX_RULES} and {MAX_IPS})",
                "narrow the policies (fewer principals or ports per rule)",
            )
        changed = self._sync_rules(plan.rules) | self._sync_ipcache(plan.ipcache)
        if changed:
            self.bump_epoch()
        return changed

    def _sync_rules(self, rules: Mapping[RuleKey, Verdict]) -> bool:
        current = self.rules()
        for key, verdict in rules.items():
            if current.get(key) != verdict:
                self.policy_map.update(_policy_key(key), _value(verdict))
        stale = [key for key in current if key not in rules]
        for key in stale:
            self.policy_map.delete(_policy_key(key))
        return stale != [] or any(current.get(k) != v for k, v in rules.items())

    def _sync_ipcache(self, ipcache: Mapping[str, int]) -> bool:
        current = self.ipcache()
        for ip, identity in ipcache.items():
            if current.get(ip) != identity:
                self.ipcache_map.update(IpKey(32, net32(ip)), Identity(identity))
        stale = [ip for ip in current if ip not in ipcache]
        for ip in stale:
            self.ipcache_map.delete(IpKey(32, net32(ip)))
        return stale != [] or any(current.get(ip) != n for ip, n in ipcache.items())

    def rules(self) -> dict[RuleKey, Verdict]:
        return {_rule_key(k): _verdict(v) for k, v in self.policy_map.items()}

    def ipcache(self) -> dict[str, int]:
        return {ip_of(k.ip): v.id for k, v in self.ipcache_map.items() if k.prefixlen == 32}

    def flows(self) -> Iterator[tuple[FlowKey, Flow]]:
        return self.flows_map.items()

    def flow_count(self) -> int:
        """Cached inbound connections (LRU: old ones are evicted, never an error)."""
        keys = self.flows_map.keys()
        return sum(1 for _ in keys)

    def epoch(self) -> int:
        value = ctypes.c_uint64()
        return value.value if _libbpf.map_lookup(self._epoch_fd, ctypes.c_uint32(0), value) else 0

    def bump_epoch(self) -> int:
        """Invalidate every cached verdict (and sockmap's admissions); the new epoch. Only
        this datapath increments it, from one thread, so read-then-write does not race."""
        new = self.epoch() + 1
        _libbpf.map_update(self._epoch_fd, ctypes.c_uint32(0), ctypes.c_uint64(new))
        return new

    # events and counters -----------------------------------------------------------------

    def open_events(self, handler: Callable[[DropEvent], None]) -> _libbpf.RingBuffer:
        """A consumer of the drop ring buffer (one per L4Policy; closed with it)."""
        if self._ring is None:
            fd = self._obj.map("events").fd
            self._ring = _libbpf.RingBuffer(fd, lambda data: handler(decode_event(data)))
        return self._ring

    def stats(self) -> L4Stats:
        return sum_per_cpu(self.stats_map.lookup(ctypes.c_uint32(0)), L4Stats)

    def program_stats(self) -> ProgramStats:
        info = prog_info(self.program.fd)
        return ProgramStats(info.run_cnt, info.run_time_ns)

    def program_id(self) -> int:
        return int(prog_info(self.program.fd).id)

    # lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release our fds. Pinned maps and links stay: enforcement goes on without us."""
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._obj.close()

    def __enter__(self) -> L4Policy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def remove(pin_dir: Path) -> None:
        """Detach every pinned link and remove every pin in ``pin_dir`` (a cold start). The
        shared epoch stays: sockmap may still use it."""
        remove_pins(pin_dir)
