"""sockmap's pure parts: sockhash keys byte for byte, peer reversal, loopback scoping."""

from __future__ import annotations

import ctypes
from dataclasses import fields
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.ebpf.sockmap import (
    Counters,
    LocalIp,
    SocketTuple,
    SockKey,
    SockMapStats,
    sock_key,
    tuple_of,
)

A, B = IPv4Address("10.201.0.1"), IPv4Address("10.201.0.2")
LO = IPv4Address("127.0.0.1")
ports = st.integers(1, 0xFFFF)


def test_key_is_addresses_in_network_order_ports_in_host_order() -> None:
    key = sock_key(SocketTuple(A, 0x1F90, B, 40000))
    raw = bytes(key)
    assert raw[:8] == bytes(8)  # no netns for pod addresses
    assert raw[8:16] == bytes([10, 201, 0, 1, 10, 201, 0, 2])
    assert raw[16:20] == (0x1F90).to_bytes(2, "little") + (40000).to_bytes(2, "little")
    assert raw[20:] == bytes([2, 0, 0, 0])  # AF_INET, pad


def test_the_peer_key_is_the_key_the_peer_socket_was_stored_under() -> None:
    client = SocketTuple(A, 40000, B, 8080)
    server = SocketTuple(B, 8080, A, 40000)
    assert client.peer == server and server.peer == client
    assert bytes(sock_key(client.peer)) == bytes(sock_key(server))


def test_loopback_keys_carry_the_netns_and_pod_keys_do_not() -> None:
    lo = SocketTuple(LO, 40000, IPv4Address("127.0.0.6"), 15001, netns=0xABCDEF)
    assert sock_key(lo).netns == 0xABCDEF
    assert sock_key(lo.peer).netns == 0xABCDEF  # both ends share the pod's namespace
    with pytest.raises(ValueError, match="only loopback tuples are scoped by netns"):
        sock_key(SocketTuple(A, 1, B, 2, netns=7))
    half = SocketTuple(LO, 1, A, 2, netns=7)  # one loopback end only: not a loopback hop
    with pytest.raises(ValueError, match="scoped by netns"):
        sock_key(half)


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_bad_ports_are_refused(port: int) -> None:
    with pytest.raises(ValueError, match=r"not in 1\.\.65535"):
        sock_key(SocketTuple(A, port, B, 80))


@given(
    st.ip_addresses(v=4), ports, st.ip_addresses(v=4), ports, st.integers(0, 2**64 - 1)
)  # fmt: skip
def test_keys_round_trip(
    local: IPv4Address, lport: int, remote: IPv4Address, rport: int, netns: int
) -> None:
    scoped = local.is_loopback and remote.is_loopback
    t = SocketTuple(local, lport, remote, rport, netns if scoped else 0)
    assert tuple_of(SockKey.from_buffer_copy(bytes(sock_key(t)))) == t


def test_counters_mirror_every_kernel_counter() -> None:
    assert [f.name for f in fields(Counters)] == [name for name, _ in SockMapStats._fields_]
    assert Counters(admitted=2, pass_bytes=5).to_json()["pass_bytes"] == 5


@pytest.mark.parametrize(
    ("struct", "size"), [(SockKey, 24), (LocalIp, 4), (SockMapStats, 72)]
)  # fmt: skip
def test_mirror_sizes_match_the_header(struct: type[ctypes.Structure], size: int) -> None:
    assert ctypes.sizeof(struct) == size


def test_tuple_str() -> None:
    assert str(SocketTuple(A, 1, B, 2)) == "10.201.0.1:1->10.201.0.2:2"
