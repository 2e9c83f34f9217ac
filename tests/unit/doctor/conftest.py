"""Fixtures for the doctor's tests: a host on which every check passes.

Each test starts from ``healthy_host`` and replaces the one thing it is about (a mountinfo
text, a failing command, a missing library) with ``dataclasses.replace``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from doctor_fakes import PID, FakeLibbpf, FakeRunner, write_mountinfo

from hybridmesh.doctor import Host


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner(
        stdout={
            ("iptables", "--version"): "iptables v1.8.9 (nf_tables)\n",
            ("-t", "nat", "-S"): "-P OUTPUT ACCEPT\n-A OUTPUT -j REDIRECT --to-ports 15001\n",
        }
    )


@pytest.fixture
def closed_fds() -> list[int]:
    return []


@pytest.fixture
def healthy_host(tmp_path: Path, runner: FakeRunner, closed_fds: list[int]) -> Host:
    """A host on which every check passes, built only from fakes and files under tmp_path."""
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"\x9f\xeb" * 4096)
    return Host(
        mountinfo=write_mountinfo(tmp_path),
        btf=btf,
        bpffs=tmp_path / "bpf",
        pid=PID,
        euid=lambda: 0,
        kernel_release=lambda: "6.1.0-18-amd64",
        which=lambda name: f"/usr/sbin/{name}",
        run=runner,
        import_module=lambda name: object(),
        load_library=lambda name: FakeLibbpf(),
        close_fd=closed_fds.append,
    )
