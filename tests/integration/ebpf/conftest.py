"""Fixtures for the eBPF tests: built objects, a cgroup v2 dir, a netns with backends, pins.

Every object carries ``hm-test-<pid>`` so a crashed run is recognisable (and ``lab down``'s
sweep reclaims it); each fixture removes what it made in ``finally``. Nothing here skips: a
kernel without cgroup v2, bpffs or the hooks fails the tests loudly.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ebpf_env import BACKENDS, PEER, PORT, TAG, VIP, Netns

from hybridmesh import env
from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf.build import build
from hybridmesh.ebpf.sock_lb import SockLB

_serial = itertools.count()


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def cgroup2_root() -> Path:
    """Where cgroup2 is mounted (hybrid hosts: <cgroup root>/unified)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2":
            return Path(fields[4])
    pytest.fail(f"no cgroup2 mount under {env.CGROUP_ROOT}: the socket hooks need cgroup v2")


@pytest.fixture(scope="session")
def built() -> None:
    """Compile the programs once (fast when up to date)."""
    if os.geteuid() != 0:
        pytest.fail("eBPF tests need root")
    build()


@pytest.fixture
def cgroup() -> Iterator[Path]:
    path = cgroup2_root() / f"{TAG}-{next(_serial)}"
    path.mkdir()
    try:
        yield path
    finally:
        _rmdir_cgroup(path)


def _rmdir_cgroup(path: Path) -> None:
    """rmdir fails with EBUSY while an exiting process still counts; give it a moment."""
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
    path.rmdir()


@pytest.fixture
def pin_dir(built: None) -> Iterator[Path]:
    path = bpffs.pin_dir(f"{TAG}-{next(_serial)}")
    try:
        yield path
    finally:
        SockLB.remove(path)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A netns whose veth holds two backend addresses and the VIP, with a peer serving
    TCP on every address and UDP on each backend, all on PORT."""
    name = f"{TAG}-{next(_serial)}"
    _sh("ip", "netns", "add", name)
    server: subprocess.Popen[str] | None = None
    try:
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        # a veth pair kept inside the netns (this kernel may lack the dummy driver)
        _sh("ip", "-n", name, "link", "add", "hm-lb0", "type", "veth", "peer", "name", "hm-lb1")
        _sh("ip", "-n", name, "link", "set", "hm-lb0", "up")
        _sh("ip", "-n", name, "link", "set", "hm-lb1", "up")
        for addr in (*BACKENDS, VIP):
            _sh("ip", "-n", name, "addr", "add", f"{addr}/32", "dev", "hm-lb0")
        argv = [sys.executable, str(PEER), "serve", str(PORT), *BACKENDS]
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, *argv], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        yield Netns(name)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        if Path("/run/netns", name).exists():  # a concurrent lab sweep may have taken it
            _sh("ip", "netns", "del", name)


@pytest.fixture
def lb(pin_dir: Path, cgroup: Path) -> Iterator[SockLB]:
    """SockLB (TCP) loaded with maps pinned in a fresh dir and attached to ``cgroup``."""
    loaded = SockLB.load(pin_dir)
    try:
        loaded.attach(cgroup)
        yield loaded
    finally:
        loaded.detach()
        loaded.close()
