from __future__ import annotations

import dataclasses
import errno
from pathlib import Path

import pytest
from doctor_fakes import FakeLibbpf

from hybridmesh.doctor import Host, Session
from hybridmesh.doctor._kernel import (
    parse_release,
    probe_bpf_syscall,
    probe_bpffs,
    probe_btf,
    probe_kernel_version,
    probe_libbpf,
    probe_root,
)
from hybridmesh.doctor.checks import CHECKS, run_check
from hybridmesh.doctor.model import ProbeError


def session(host: Host, **changes: object) -> Session:
    return Session(dataclasses.replace(host, **changes))  # type: ignore[arg-type]


def test_root_passes_only_for_euid_0(healthy_host: Host) -> None:
    assert probe_root(session(healthy_host)).ok
    outcome = probe_root(session(healthy_host, euid=lambda: 1000))
    assert not outcome.ok
    assert "1000" in outcome.detail


@pytest.mark.parametrize(
    ("release", "ok"),
    [
        ("6.18.44-fc-v595", True),
        ("5.15.0-91-generic", True),
        ("6.1.0-18-amd64", True),
        ("10.0", True),
        ("5.14.21-150400", False),
        ("4.19.0-26-amd64", False),
    ],
)
def test_kernel_version_threshold_is_5_15(healthy_host: Host, release: str, ok: bool) -> None:
    outcome = probe_kernel_version(session(healthy_host, kernel_release=lambda: release))

    assert outcome.ok is ok
    assert release in outcome.detail


def test_kernel_version_failure_names_the_minimum(healthy_host: Host) -> None:
    outcome = probe_kernel_version(session(healthy_host, kernel_release=lambda: "5.10.0"))

    assert outcome.detail == "5.10.0 is older than 5.15"


def test_unparseable_release_is_a_failed_check_not_a_crash(healthy_host: Host) -> None:
    with pytest.raises(ProbeError, match="cannot parse"):
        parse_release("linux-next")
    check = next(c for c in CHECKS if c.probe is probe_kernel_version)

    result = run_check(check, session(healthy_host, kernel_release=lambda: "linux-next"))

    assert not result.ok
    assert "cannot parse kernel release 'linux-next'" in result.outcome.detail


def test_btf_present_missing_and_empty(healthy_host: Host, tmp_path: Path) -> None:
    assert probe_btf(session(healthy_host)).ok
    missing = probe_btf(session(healthy_host, btf=tmp_path / "nope"))
    assert not missing.ok
    assert "does not exist" in missing.detail
    empty = tmp_path / "empty"
    empty.touch()
    assert "is empty" in probe_btf(session(healthy_host, btf=empty)).detail


def test_bpffs_needs_a_bpf_mount_exactly_at_the_path(healthy_host: Host, tmp_path: Path) -> None:
    assert probe_bpffs(session(healthy_host)).ok
    elsewhere = probe_bpffs(session(healthy_host, bpffs=tmp_path / "other"))
    assert not elsewhere.ok
    info = tmp_path / "tmpfs-info"
    info.write_text(f"42 23 0:39 / {tmp_path}/bpf rw - tmpfs tmpfs rw\n")
    assert not probe_bpffs(session(healthy_host, mountinfo=info)).ok


def test_libbpf_reports_its_version(healthy_host: Host) -> None:
    outcome = probe_libbpf(session(healthy_host))

    assert outcome.ok
    assert outcome.detail == "libbpf.so.1 (libbpf 1.1)"


def test_libbpf_that_cannot_be_loaded_fails_with_the_reason(healthy_host: Host) -> None:
    def missing(name: str) -> object:
        raise OSError(f"{name}: cannot open shared object file")

    check = next(c for c in CHECKS if c.probe is probe_libbpf)
    result = run_check(check, session(healthy_host, load_library=missing))

    assert not result.ok
    assert "cannot load libbpf.so.1" in result.outcome.detail


def test_libbpf_without_bpf_map_create_is_too_old(healthy_host: Host) -> None:
    outcome = probe_libbpf(session(healthy_host, load_library=lambda name: object()))

    assert not outcome.ok
    assert "bpf_map_create" in outcome.detail


def test_bpf_syscall_creates_an_array_map_and_closes_it(
    healthy_host: Host, closed_fds: list[int]
) -> None:
    lib = FakeLibbpf(map_fd=9)

    outcome = probe_bpf_syscall(session(healthy_host, load_library=lambda name: lib))

    assert outcome.ok
    ((map_type, name, key_size, value_size, entries, opts),) = lib.bpf_map_create.calls
    assert (map_type, key_size, value_size, entries, opts) == (2, 4, 4, 1, None)
    assert name.startswith(b"hm")
    assert closed_fds == [9]


def test_bpf_syscall_refused_reports_the_errno(healthy_host: Host, closed_fds: list[int]) -> None:
    lib = FakeLibbpf(map_fd=-errno.EPERM)

    outcome = probe_bpf_syscall(session(healthy_host, load_library=lambda name: lib))

    assert not outcome.ok
    assert "Operation not permitted (errno 1)" in outcome.detail
    assert closed_fds == []
