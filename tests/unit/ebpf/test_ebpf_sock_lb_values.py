"""sock_lb's pure parts: map entries byte for byte, id allocation, argument validation."""

from __future__ import annotations

import ctypes
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.ebpf import sock_lb
from hybridmesh.ebpf._libbpf import BpfObject
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.ebpf.sock_lb import (
    Backend,
    BackendKey,
    ProgramStats,
    RevNat,
    Service,
    Svc,
    SvcKey,
    SvcStats,
    allocate_id,
    backend_value,
    service_key,
    service_of,
)


def test_service_key_is_network_order_as_bpf_sock_addr_has_it() -> None:
    key = service_key(Service(IPv4Address("10.96.0.10"), 80, "tcp"))
    assert bytes(key) == bytes([10, 96, 0, 10, 0, 80, 6, 0])
    udp = service_key(Service(IPv4Address("10.96.0.10"), 0x1F90, "udp"))
    assert bytes(udp)[4:] == bytes([0x1F, 0x90, 17, 0])


def test_backend_value_is_network_order() -> None:
    assert bytes(backend_value("10.200.0.2", 8080)) == bytes([10, 200, 0, 2, 0x1F, 0x90, 0, 0])


@given(
    st.integers(0, 2**32 - 1).map(IPv4Address),
    st.integers(1, 65535),
    st.sampled_from(["tcp", "udp"]),
)
def test_service_key_round_trips(vip: IPv4Address, port: int, protocol: str) -> None:
    service = Service(vip, port, "tcp" if protocol == "tcp" else "udp")
    assert service_of(SvcKey.from_buffer_copy(bytes(service_key(service)))) == service


@pytest.mark.parametrize(
    ("struct", "size"),
    [(SvcKey, 8), (Svc, 8), (BackendKey, 8), (Backend, 8), (RevNat, 12), (SvcStats, 16)],
)
def test_mirror_sizes_match_the_header(struct: type[ctypes.Structure], size: int) -> None:
    """The real check is against BTF at load; this one catches an edit before any kernel."""
    assert ctypes.sizeof(struct) == size


def test_allocate_id_takes_the_lowest_free_and_never_zero() -> None:
    assert allocate_id([]) == 1
    assert allocate_id([1, 2, 4]) == 3
    assert allocate_id(range(1, 5), limit=6) == 5
    with pytest.raises(BpfError, match="all 5 service ids are in use"):
        allocate_id(range(1, 6), limit=6)


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_bad_backend_ports_are_refused(port: int) -> None:
    with pytest.raises(ValueError, match=r"not in 1\.\.65535"):
        backend_value("10.0.0.1", port)


def test_bad_backend_address_is_refused() -> None:
    with pytest.raises(ValueError, match="Expected 4 octets"):
        backend_value("10.0.0", 80)


def test_unknown_protocol_is_refused_before_touching_the_kernel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def must_not_open(path: Path) -> BpfObject:
        raise AssertionError("opened an object for a bad argument")

    monkeypatch.setattr(BpfObject, "open", must_not_open)
    with pytest.raises(ValueError, match="'sctp' is not one of"):
        sock_lb.SockLB.load(tmp_path / "hm-x", protocols=("sctp",))  # type: ignore[arg-type]


def test_default_pin_dir_carries_the_prefix() -> None:
    assert sock_lb.DEFAULT_PIN_DIR.name == "hm-sock-lb"


def test_program_stats_per_run() -> None:
    assert ProgramStats(run_cnt=4, run_time_ns=1000).ns_per_run == 250
    assert ProgramStats(run_cnt=0, run_time_ns=0).ns_per_run == 0


def test_service_str() -> None:
    assert str(Service(IPv4Address("10.96.0.10"), 80, "udp")) == "10.96.0.10:80/udp"
