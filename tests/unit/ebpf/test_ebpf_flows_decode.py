"""flows records: the ctypes mirror's layout and the decoder (no kernel needed)."""

from __future__ import annotations

import sys
from dataclasses import replace
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.ebpf.flows import RECORD_SIZE, Flow, FlowDecodeError, RawRecord, decode, local_key


def _net32(ip: str) -> int:
    return int.from_bytes(IPv4Address(ip).packed, sys.byteorder)


def raw(**kw: int) -> bytes:
    base = dict(ts_ns=5, duration_ns=7, bytes_acked=1002, bytes_received=11,
                local_ip=_net32("10.1.2.3"), remote_ip=_net32("10.9.8.7"), local_port=40000,
                remote_port=80, netns=4026531840, srtt_us=52, total_retrans=2, kind=2, flags=1,
                old_state=9, new_state=7)  # fmt: skip
    return bytes(RawRecord(**{**base, **kw}))


def test_the_record_is_64_bytes_without_holes() -> None:
    assert RECORD_SIZE == 64
    names = [field[0] for field in RawRecord._fields_]
    fields = [getattr(RawRecord, name) for name in names]
    assert max(f.offset + f.size for f in fields) == RECORD_SIZE
    assert sum(f.size for f in fields) == RECORD_SIZE


def test_decode() -> None:
    assert decode(raw()) == Flow(
        kind="close", monotonic_ns=5, local_ip="10.1.2.3", local_port=40000,
        remote_ip="10.9.8.7", remote_port=80, netns=4026531840, passive=True, seen_open=True,
        bytes_acked=1002, bytes_received=11, srtt_us=52, total_retrans=2, duration_ns=7,
        old_state=9, new_state=7,
    )  # fmt: skip


@pytest.mark.parametrize(("kind", "name"), [(1, "open"), (2, "close"), (3, "retransmit")])
def test_kinds(kind: int, name: str) -> None:
    assert decode(raw(kind=kind)).kind == name


def test_flags() -> None:
    assert not decode(raw(flags=0)).passive
    unseen = decode(raw(flags=2))
    assert not unseen.passive and not unseen.seen_open


@pytest.mark.parametrize("data", [b"", raw()[:-1], raw() + b"\0", raw(kind=0), raw(kind=4)])
def test_decode_rejects(data: bytes) -> None:
    with pytest.raises(FlowDecodeError):
        decode(data)


@given(st.binary(min_size=0, max_size=80))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    try:
        flow = decode(data)
    except FlowDecodeError:
        return
    assert flow.kind in ("open", "close", "retransmit")


def test_local_key_is_network_order() -> None:
    key = local_key(7, "10.0.0.1")
    assert key.netns == 7
    assert bytes(key)[4:] == bytes([10, 0, 0, 1])


def flow(**kw: object) -> Flow:
    return replace(decode(raw()), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "payload"),
    [
        # the connecting side: its SYN is in bytes_acked from the open on
        ({"kind": "open", "passive": False, "bytes_acked": 1, "bytes_received": 0}, (0, 0)),
        ({"kind": "open", "passive": True, "bytes_acked": 0, "bytes_received": 0}, (0, 0)),
        # graceful closes from FIN_WAIT2, LAST_ACK, CLOSING: our FIN was acked
        ({"passive": False, "old_state": 5, "fin_in": True, "bytes_acked": 1002,
          "bytes_received": 11}, (1000, 10)),
        ({"passive": False, "old_state": 5, "bytes_acked": 1002, "bytes_received": 10},
         (1000, 10)),
        ({"passive": True, "old_state": 9, "fin_in": True, "bytes_acked": 11,
          "bytes_received": 1001}, (10, 1000)),
        ({"passive": True, "old_state": 11, "fin_in": True, "bytes_acked": 11,
          "bytes_received": 1001}, (10, 1000)),
        # reset while established: no FIN either way; after the peer's FIN only theirs
        ({"passive": True, "old_state": 1, "bytes_acked": 10, "bytes_received": 5}, (10, 5)),
        ({"passive": True, "old_state": 8, "fin_in": True, "bytes_acked": 10,
          "bytes_received": 6}, (10, 5)),
        # never negative, whatever the counters say
        ({"passive": False, "old_state": 9, "bytes_acked": 0, "bytes_received": 0}, (0, 0)),
    ],
)  # fmt: skip
def test_payload_takes_syn_and_fin_off(kw: dict[str, object], payload: tuple[int, int]) -> None:
    assert flow(**kw).payload == payload


def test_fin_in_flag() -> None:
    assert decode(raw(flags=4)).fin_in
    assert not decode(raw(flags=3)).fin_in
