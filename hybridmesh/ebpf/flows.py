"""TCP flow visibility: the loader of ``bpf/flows.bpf.c`` and the decoder of its records.

Two tp_btf tracepoint programs (``inet_sock_set_state``, ``tcp_retransmit_skb``) write one
:class:`RawRecord` per flow open, close and retransmit of this node's pods into a ring buffer;
:meth:`Flows.consume` turns what arrived into :class:`Flow` values. Which sockets count as "this
node's" is the ``local`` map of (netns inode, address): tracepoints fire for every namespace on
the machine, and other labs may reuse our addresses.

Bytes come from the tcp_sock's counters, plus — for two same-node sockets that sockmap joined,
whose payload sk_msg carries past TCP — what sockmap counted per socket in the shared
``hm_sock_bytes`` (pinned in ``shared_dir``, see :mod:`hybridmesh.ebpf._shared`); such closes
say ``redirected``.

Everything lives in maps and links pinned under ``pin_dir`` (``<bpffs>/hm-<node>-flows``), so a
restarted agent finds the flows opened before it (their start time and retransmit count) and
the records written while it was away. Tracepoint links cannot have their program replaced in
place (raw tracepoint links have no update in the kernel), so an upgrade is a generation switch::

    flows = Flows.load(pin_dir)   # new programs attached beside the old ones, inert;
                                  # control[0] := new generation (atomic: the old ones go
                                  # quiet, the new ones report); old links detached, unpinned
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal

from hybridmesh.ebpf import _libbpf
from hybridmesh.ebpf._libbpf import BpfObject
from hybridmesh.ebpf._links import (
    TRACING_DETACH_ERRORS,
    ProgramStats,
    detach_pin,
    prepare_pin_dirs,
    program_ids,
    program_stats,
    remove_pins,
)
from hybridmesh.ebpf._shared import BYTES_MAP, pin_shared, shared_fd
from hybridmesh.ebpf.btf import BtfKind, check_layout
from hybridmesh.ebpf.build import BPF_DIR
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.ebpf.maps import Map, PerCpuMap

__all__ = [
    "MAPS",
    "MAX_LOCAL",
    "OBJECT",
    "PROGRAMS",
    "RECORD_SIZE",
    "Flow",
    "FlowCounters",
    "FlowDecodeError",
    "FlowLocal",
    "FlowState",
    "FlowStats",
    "Flows",
    "ProgramStats",
    "RawRecord",
    "decode",
    "local_key",
    "realtime_offset_ns",
]

OBJECT = BPF_DIR / "flows.bpf.o"
PROGRAMS = ("hm_flow_state", "hm_flow_retransmit")
MAPS = ("local", "tracked", "stats", "control", "events")
MAX_LOCAL = 4096  # HM_FLOWS_MAX_LOCAL
_KINDS: dict[int, FlowKind] = {1: "open", 2: "close", 3: "retransmit"}  # HM_FLOW_*
_PASSIVE, _UNSEEN, _FIN_IN, _REDIRECTED = 1, 2, 4, 8  # HM_FLOW_* flags
_FIN_WAIT2, _LAST_ACK, _CLOSING = 5, 9, 11  # TCP states (include/net/tcp_states.h)
_OUR_FIN_ACKED = frozenset({_FIN_WAIT2, _LAST_ACK, _CLOSING})

FlowKind = Literal["open", "close", "retransmit"]


# --- mirrors of bpf/flows.h (checked against the object's BTF) --------------------------------


class FlowLocal(ctypes.Structure):
    _fields_ = [("netns", ctypes.c_uint32), ("ip", ctypes.c_uint32)]


class FlowState(ctypes.Structure):
    _fields_ = [
        ("start_ns", ctypes.c_uint64),
        ("retransmits", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


class FlowStats(ctypes.Structure):
    _fields_ = [
        ("events", ctypes.c_uint64),
        ("lost", ctypes.c_uint64),
        ("retransmits", ctypes.c_uint64),
    ]


class RawRecord(ctypes.Structure):
    """``struct hm_flow_record``: one ring buffer record."""

    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("duration_ns", ctypes.c_uint64),
        ("bytes_acked", ctypes.c_uint64),
        ("bytes_received", ctypes.c_uint64),
        ("local_ip", ctypes.c_uint32),
        ("remote_ip", ctypes.c_uint32),
        ("local_port", ctypes.c_uint16),
        ("remote_port", ctypes.c_uint16),
        ("netns", ctypes.c_uint32),
        ("srtt_us", ctypes.c_uint32),
        ("total_retrans", ctypes.c_uint32),
        ("kind", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("old_state", ctypes.c_uint8),
        ("new_state", ctypes.c_uint8),
        ("pad", ctypes.c_uint32),
    ]


RECORD_SIZE = ctypes.sizeof(RawRecord)


# --- pure: records to values ------------------------------------------------------------------


class FlowDecodeError(BpfError):
    """A ring buffer record that is not an ``hm_flow_record`` (a layout or version mismatch)."""


@dataclass(frozen=True)
class Flow:
    """One record, from the local socket's point of view.

    ``passive``: the local socket accepted the connection (it is the server side).
    ``seen_open``: the open was recorded; when not, ``passive`` is a guess from the ports and
    ``duration_ns`` is 0. ``fin_in`` (close): the peer's FIN had arrived.
    ``bytes_acked``/``bytes_received`` are the kernel's counters, which include the SYN and
    FINs, plus (``redirected``) the bytes sockmap carried socket-to-socket;
    :attr:`payload` is the application's bytes.
    """

    kind: FlowKind
    monotonic_ns: int
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    netns: int
    passive: bool
    seen_open: bool
    bytes_acked: int
    bytes_received: int
    srtt_us: int
    total_retrans: int
    duration_ns: int
    old_state: int
    new_state: int
    fin_in: bool = False
    redirected: bool = False

    @property
    def payload(self) -> tuple[int, int]:
        """Application bytes (sent, received) by the local socket: the counters less the
        sequence numbers SYN and FIN take. Our FIN was acknowledged when the socket closed
        from FIN_WAIT2, LAST_ACK or CLOSING; the peer's had arrived when the kernel marked the
        socket done (``fin_in``), which no state tells: an orphaned FIN_WAIT2 socket may or may
        not have had it."""
        sent, received = self.bytes_acked, self.bytes_received
        if not self.passive:
            sent -= 1  # our SYN, acknowledged once established
        if self.kind == "close":
            sent -= self.old_state in _OUR_FIN_ACKED
            received -= self.fin_in
        return max(sent, 0), max(received, 0)


def _ip_of(net32: int) -> str:
    return str(IPv4Address(net32.to_bytes(4, sys.byteorder)))


def _net32(ip: str) -> int:
    return int.from_bytes(IPv4Address(ip).packed, sys.byteorder)


def decode(data: bytes) -> Flow:
    """One ring buffer record as a :class:`Flow`; :class:`FlowDecodeError` when it is not one."""
    if len(data) != RECORD_SIZE:
        raise FlowDecodeError(f"flow record of {len(data)} bytes, expected {RECORD_SIZE}")
    raw = RawRecord.from_buffer_copy(data)
    kind = _KINDS.get(raw.kind)
    if kind is None:
        raise FlowDecodeError(f"flow record of unknown kind {raw.kind}")
    return Flow(
        kind=kind,
        monotonic_ns=raw.ts_ns,
        local_ip=_ip_of(raw.local_ip),
        local_port=raw.local_port,
        remote_ip=_ip_of(raw.remote_ip),
        remote_port=raw.remote_port,
        netns=raw.netns,
        passive=bool(raw.flags & _PASSIVE),
        seen_open=not raw.flags & _UNSEEN,
        bytes_acked=raw.bytes_acked,
        bytes_received=raw.bytes_received,
        srtt_us=raw.srtt_us,
        total_retrans=raw.total_retrans,
        duration_ns=raw.duration_ns,
        old_state=raw.old_state,
        new_state=raw.new_state,
        fin_in=bool(raw.flags & _FIN_IN),
        redirected=bool(raw.flags & _REDIRECTED),
    )


def local_key(netns: int, ip: str) -> FlowLocal:
    """The ``local`` map key of a pod: its netns inode (0: any namespace) and address."""
    return FlowLocal(netns, _net32(ip))


@dataclass(frozen=True)
class FlowCounters:
    events: int
    """Records written to the ring buffer."""
    lost: int
    """Records dropped because the ring buffer was full."""
    retransmits: int
    """Retransmits of followed sockets."""


# --- the loaded programs ----------------------------------------------------------------------


class Flows:
    """The loaded flows object: typed maps, its pinned tracepoint links, the ring buffer reader."""

    def __init__(self, obj: BpfObject, pin_dir: Path, generation: int) -> None:
        self.pin_dir = pin_dir
        self.generation = generation
        self._obj = obj
        self.local_map = Map(obj.map("local"), FlowLocal, ctypes.c_uint32)
        self.tracked_map = Map(obj.map("tracked"), ctypes.c_uint64, FlowState)
        self.stats_map = PerCpuMap(obj.map("stats"), ctypes.c_uint32, FlowStats)
        self.control_map = Map(obj.map("control"), ctypes.c_uint32, ctypes.c_uint64)
        self.events_map = obj.map("events")
        self.programs = {name: obj.program(name) for name in PROGRAMS}
        btf = obj.btf
        check_layout(RawRecord, btf, btf.find("hm_flow_record", BtfKind.STRUCT), "hm_flow_record")
        self._pending: list[Flow] = []
        self._ring: _libbpf.RingBuffer | None = None

    @classmethod
    def load(
        cls,
        pin_dir: Path,
        ringbuf_bytes: int | None = None,
        emit_retransmits: bool = True,
        obj_path: Path = OBJECT,
        shared_dir: Path | None = None,
    ) -> Flows:
        """Load and attach, reusing what is pinned in ``pin_dir`` (see the module docstring).

        ``shared_dir`` (``hm-<node>-shared``) is where sockmap's byte counts are shared; without
        it flows keeps a private, empty map and reports TCP's counters alone.

        ``ringbuf_bytes`` (a power of two, at least a page) only applies to a fresh pin dir:
        a pinned ring buffer of another size makes the load fail (remove the pins first).
        """
        prepare_pin_dirs(*((pin_dir, shared_dir) if shared_dir else (pin_dir,)))
        generation = _pinned_generation(pin_dir / "control") + 1
        obj = BpfObject.open(obj_path)
        try:
            obj.set_rodata("generation", ctypes.c_uint64(generation))
            obj.set_rodata("emit_retransmits", ctypes.c_uint8(emit_retransmits))
            if ringbuf_bytes is not None:
                obj.map("events").set_max_entries(ringbuf_bytes)
            for name in MAPS:
                obj.map(name).set_pin_path(pin_dir / name)
            if shared_dir is not None:
                pin_shared(obj, shared_dir, BYTES_MAP)
            obj.load()
            shared_fd(obj, BYTES_MAP)
            flows = cls(obj, pin_dir, generation)
            flows._switch_generation()
        except BaseException:
            obj.close()
            raise
        return flows

    def _switch_generation(self) -> None:
        """Attach ours (inert until control[0] names our generation), flip, drop the old."""
        fresh: list[Path] = []
        try:
            for name, program in self.programs.items():
                link = program.attach()
                try:
                    pin = self.pin_dir / f"link-{name}-{self.generation}"
                    link.pin(pin)
                    fresh.append(pin)
                finally:
                    link.destroy()
        except BaseException:
            for pin in fresh:
                _detach_pin(pin)
            raise
        self.control_map.update(ctypes.c_uint32(0), ctypes.c_uint64(self.generation))
        for pin in sorted(self.pin_dir.glob("link-*")):
            if pin not in fresh:
                _detach_pin(pin)

    def map(self, name: str) -> _libbpf.BpfMap:
        """One of :data:`MAPS`, untyped (for sizes and status)."""
        if name not in MAPS:
            raise ValueError(f"flows has no map {name!r}; it has {', '.join(MAPS)}")
        return self._obj.map(name)

    def pin(self, name: str) -> Path:
        return self.pin_dir / name

    def links(self) -> list[str]:
        """Names of the pinned links (``link-<program>-<generation>``)."""
        return sorted(p.name for p in self.pin_dir.glob("link-*"))

    # local pods ----------------------------------------------------------------------------

    def set_local(self, pods: Iterable[tuple[int, str]]) -> None:
        """Follow exactly these (netns inode, address) pairs; netns 0 matches any namespace."""
        wanted = {(netns, _net32(ip)) for netns, ip in pods}
        if len(wanted) > MAX_LOCAL:
            raise BpfError(f"{len(wanted)} local pods, the flows map holds {MAX_LOCAL}")
        present = {(k.netns, k.ip) for k in list(self.local_map.keys())}
        for netns, ip in wanted - present:
            self.local_map.update(FlowLocal(netns, ip), ctypes.c_uint32(1))
        for netns, ip in present - wanted:
            self.local_map.delete(FlowLocal(netns, ip))

    def local(self) -> set[tuple[int, str]]:
        return {(k.netns, _ip_of(k.ip)) for k in list(self.local_map.keys())}

    # records -------------------------------------------------------------------------------

    def _on_record(self, data: bytes) -> None:
        self._pending.append(decode(data))

    def consume(self) -> list[Flow]:
        """Every record waiting in the ring buffer, oldest first (never blocks)."""
        if self._ring is None:
            self._ring = _libbpf.RingBuffer(self.events_map.fd, self._on_record)
        try:
            self._ring.consume()
        finally:
            flows, self._pending = self._pending, []
        return flows

    def counters(self) -> FlowCounters:
        per_cpu = self.stats_map.lookup(ctypes.c_uint32(0)) or []
        return FlowCounters(
            sum(s.events for s in per_cpu),
            sum(s.lost for s in per_cpu),
            sum(s.retransmits for s in per_cpu),
        )

    def program_stats(self) -> dict[str, ProgramStats]:
        return program_stats(self.programs)

    def program_ids(self) -> dict[str, int]:
        return program_ids(self.programs)

    # lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release our fds and the reader. Pinned maps and links stay: flows keep being
        recorded into the pinned ring buffer for the next agent."""
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._obj.close()

    def __enter__(self) -> Flows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def remove(pin_dir: Path) -> None:
        """Detach every pinned link and remove every pin in ``pin_dir`` (a cold start)."""
        remove_pins(pin_dir, TRACING_DETACH_ERRORS)


def realtime_offset_ns() -> int:
    """CLOCK_REALTIME minus CLOCK_MONOTONIC now: added to a record's bpf_ktime_get_ns."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _pinned_generation(control_pin: Path) -> int:
    """The active generation of a previous load (0 when nothing is pinned)."""
    if not control_pin.exists():
        return 0
    fd = _libbpf.obj_get(control_pin)
    try:
        value = ctypes.c_uint64()
        found = _libbpf.map_lookup(fd, ctypes.c_uint32(0), value)
        return value.value if found else 0
    finally:
        os.close(fd)


def _detach_pin(pin: Path) -> None:
    detach_pin(pin, TRACING_DETACH_ERRORS)
