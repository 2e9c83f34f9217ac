"""nodesteer's pure parts: hm_node_src entries byte for byte as the node proxy reads them."""

from __future__ import annotations

import ctypes
from dataclasses import fields
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.agent.nodeproxy import source
from hybridmesh.ebpf.nodesteer import (
    Counters,
    NodeSteerStats,
    SrcKey,
    SrcValue,
    entry_of,
    src_key,
)

addresses = st.ip_addresses(v=4)
ports = st.integers(1, 0xFFFF)


def _value(cgroup_id: int, ip: IPv4Address, port: int) -> SrcValue:
    """A value as hm_ns_connect4 stores it (network-order address and port)."""
    key = src_key((ip, port), (ip, port))
    return SrcValue(cgroup_id, key.saddr, key.sport, 0)


def test_sizes_match_the_proxys_struct_formats() -> None:
    assert ctypes.sizeof(SrcKey) == source.KEY.size == 12
    assert ctypes.sizeof(SrcValue) == source.VALUE.size == 16


@given(addresses, ports, addresses, ports)
def test_key_bytes_are_the_proxys_key_bytes(
    peer: IPv4Address, sport: int, local: IPv4Address, dport: int
) -> None:
    ours = bytes(src_key((peer, sport), (local, dport)))
    assert ours == source.pack_key((str(peer), sport), (str(local), dport))


@given(st.integers(0, 2**64 - 1), addresses, ports)
def test_value_bytes_are_what_the_proxy_unpacks(cgroup_id: int, ip: IPv4Address, port: int) -> None:
    raw = bytes(_value(cgroup_id, ip, port))
    assert raw == source.pack_value(cgroup_id, (str(ip), port))
    assert source.unpack_value(raw) == (cgroup_id, (str(ip), port))


def test_entry_reads_back_what_the_kernel_wrote() -> None:
    key = src_key(("10.244.1.10", 40000), ("10.244.1.1", 15001))
    entry = entry_of(key, _value(4242, IPv4Address("10.96.0.10"), 80))
    assert entry.peer == (IPv4Address("10.244.1.10"), 40000)
    assert entry.local == (IPv4Address("10.244.1.1"), 15001)
    assert (entry.cgroup_id, entry.destination) == (4242, (IPv4Address("10.96.0.10"), 80))


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_bad_ports_are_refused(port: int) -> None:
    with pytest.raises(ValueError, match=r"not in 1\.\.65535"):
        src_key(("10.0.0.1", port), ("10.0.0.2", 15001))


def test_counters_mirror_the_stats_struct() -> None:
    names = [field[0] for field in NodeSteerStats._fields_]
    assert names == [f.name for f in fields(Counters)]
    assert ctypes.sizeof(NodeSteerStats) == 8 * len(names)
    assert Counters(steered=2).to_json()["steered"] == 2
