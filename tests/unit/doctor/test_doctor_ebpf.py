"""The eBPF rows of `hybridmesh check`: one per program and map type, probed through libbpf."""

from __future__ import annotations

import dataclasses

from doctor_fakes import FakeLibbpf

from hybridmesh.doctor import Host, Session
from hybridmesh.doctor._ebpf import CHECKS, MAP_NEEDS, PROG_NEEDS
from hybridmesh.doctor.checks import run_check
from hybridmesh.ebpf._libbpf_agent import MAP_TYPES, PROG_TYPES

WANTED_PROGS = {"cgroup_sock_addr", "sock_ops", "sk_msg", "sk_lookup", "cgroup_skb", "tracepoint"}
WANTED_MAPS = {"hash", "lru_hash", "lpm_trie", "array", "sockhash", "sockmap", "ringbuf"}


def test_every_needed_type_has_a_row_and_a_kernel_number() -> None:
    assert {n.name for n in PROG_NEEDS} >= WANTED_PROGS
    assert {n.name for n in MAP_NEEDS} >= WANTED_MAPS
    assert {n.name for n in PROG_NEEDS} <= set(PROG_TYPES)
    assert {n.name for n in MAP_NEEDS} <= set(MAP_TYPES)
    assert len(CHECKS) == len(PROG_NEEDS) + len(MAP_NEEDS)
    assert all(c.category == "ebpf" and not c.fatal for c in CHECKS)


def with_lib(host: Host, lib: FakeLibbpf) -> Host:
    return dataclasses.replace(host, load_library=lambda _name: lib)


def test_a_supported_type_passes_and_says_who_needs_it(healthy_host: Host) -> None:
    lib = FakeLibbpf()
    row = next(c for c in CHECKS if c.name == "program type sk_lookup is supported")
    result = run_check(row, Session(with_lib(healthy_host, lib)))
    assert result.ok and "capture" in result.outcome.detail
    assert lib.libbpf_probe_bpf_prog_type.calls == [(PROG_TYPES["sk_lookup"], None)]


def test_an_unsupported_type_fails_with_what_will_not_work(healthy_host: Host) -> None:
    row = next(c for c in CHECKS if c.name == "map type ringbuf is supported")
    result = run_check(row, Session(with_lib(healthy_host, FakeLibbpf(probe=0))))
    assert not result.ok and result.is_warning
    assert "refuses maps of type ringbuf" in result.outcome.detail
    assert "CONFIG_BPF_SYSCALL" in row.hint


def test_a_probe_that_cannot_run_is_a_clear_failure(healthy_host: Host) -> None:
    row = next(c for c in CHECKS if c.name == "program type sk_msg is supported")
    result = run_check(row, Session(with_lib(healthy_host, FakeLibbpf(probe=-1))))
    assert not result.ok and result.outcome.detail.startswith("cannot probe: probe program type")
