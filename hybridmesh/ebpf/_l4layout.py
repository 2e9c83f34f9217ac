"""The layouts of ``bpf/l4policy.h`` as ctypes mirrors, and the pure decoding of what the
kernel writes (drop events, counters). Checked against the object's BTF by the loader
(:mod:`hybridmesh.ebpf.l4policy`), so a struct edited on one side fails at load time.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal

from hybridmesh.ebpf.errors import BpfError

__all__ = [
    "DropEvent",
    "Flow",
    "FlowKey",
    "Identity",
    "IpKey",
    "L4Stats",
    "PolicyKey",
    "PolicyValue",
    "RawEvent",
    "Stats",
    "decode_event",
    "ip_of",
    "net32",
]

# --- mirrors of bpf/l4policy.h (checked against the object's BTF) ----------------------------


class IpKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("ip", ctypes.c_uint32)]


class Identity(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32)]


class PolicyKey(ctypes.Structure):
    _fields_ = [
        ("src", ctypes.c_uint32),
        ("dst", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class PolicyValue(ctypes.Structure):
    _fields_ = [
        ("verdict", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
        ("policy", ctypes.c_uint32),
    ]


class FlowKey(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
    ]


class Flow(ctypes.Structure):
    _fields_ = [
        ("epoch", ctypes.c_uint64),
        ("last_event_ns", ctypes.c_uint64),
        ("src_id", ctypes.c_uint32),
        ("dst_id", ctypes.c_uint32),
        ("v", PolicyValue),
    ]


class Stats(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "allowed_new",
            "dropped_new",
            "passed",
            "dropped_established",
            "reevaluated",
            "untracked",
            "events",
            "events_lost",
            "dropped_ipv6",
        )
    ]


class RawEvent(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("policy", ctypes.c_uint32),
        ("src_id", ctypes.c_uint32),
        ("dst_id", ctypes.c_uint32),
        ("direction", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


# --- pure translation -------------------------------------------------------------------------


def net32(ip: str) -> int:
    return int.from_bytes(IPv4Address(ip).packed, sys.byteorder)


def ip_of(net32: int) -> str:
    return str(IPv4Address(net32.to_bytes(4, sys.byteorder)))


@dataclass(frozen=True, slots=True)
class DropEvent:
    """One drop the kernel reported (at most one per flow per event interval)."""

    monotonic_ns: int  # bpf_ktime_get_ns: CLOCK_MONOTONIC
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    policy: int  # policy id; the plan's ``policies`` names it
    src_identity: int
    dst_identity: int
    reason: Literal["new", "established"]
    default_deny: bool


def decode_event(data: bytes) -> DropEvent:
    if len(data) < ctypes.sizeof(RawEvent):
        raise BpfError(f"l4policy event of {len(data)} bytes, expected {ctypes.sizeof(RawEvent)}")
    raw = RawEvent.from_buffer_copy(data[: ctypes.sizeof(RawEvent)])
    return DropEvent(
        monotonic_ns=raw.ts_ns,
        src_ip=ip_of(raw.saddr),
        src_port=raw.sport,
        dst_ip=ip_of(raw.daddr),
        dst_port=raw.dport,
        policy=raw.policy,
        src_identity=raw.src_id,
        dst_identity=raw.dst_id,
        reason="established" if raw.reason == 1 else "new",
        default_deny=bool(raw.flags & 1),
    )


@dataclass(frozen=True)
class L4Stats:
    """Per-verdict counters summed over CPUs (see ``struct hm_l4_stats``)."""

    allowed_new: int = 0
    dropped_new: int = 0
    passed: int = 0
    dropped_established: int = 0
    reevaluated: int = 0
    untracked: int = 0
    events: int = 0
    events_lost: int = 0
    dropped_ipv6: int = 0
