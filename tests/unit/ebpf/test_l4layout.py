"""Decoding what l4policy.bpf.c writes into its ring buffer."""

from __future__ import annotations

import ctypes

import pytest

from hybridmesh.ebpf._l4layout import RawEvent, decode_event, ip_of, net32
from hybridmesh.ebpf.errors import BpfError


def test_a_raw_event_decodes_to_addresses_ports_and_reason() -> None:
    raw = RawEvent(ts_ns=123, saddr=net32("10.0.0.3"), daddr=net32("10.0.0.2"), sport=40000,
                   dport=8080, policy=7, src_id=300, dst_id=400, direction=0, reason=1, flags=1)
    event = decode_event(bytes(raw) + b"\0" * 8)  # trailing ring-buffer padding is ignored
    assert (event.monotonic_ns, event.src_ip, event.src_port, event.dst_ip, event.dst_port) == (
        123, "10.0.0.3", 40000, "10.0.0.2", 8080)
    assert (event.policy, event.src_identity, event.dst_identity) == (7, 300, 400)
    assert (event.reason, event.default_deny) == ("established", True)


def test_addresses_are_kept_in_network_order() -> None:
    assert bytes(ctypes.c_uint32(net32("10.1.2.3"))) == bytes([10, 1, 2, 3])
    assert ip_of(net32("192.0.2.1")) == "192.0.2.1"


def test_a_short_record_is_a_typed_error() -> None:
    with pytest.raises(BpfError, match="expected 40"):
        decode_event(b"\0" * 8)
