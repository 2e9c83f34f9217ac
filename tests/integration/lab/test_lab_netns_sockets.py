"""Sockets made inside a pod's netns from a process that stays in the root netns."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from minilab import ECHO_PORT, MiniLab

from hybridmesh.lab import netns

pytestmark = pytest.mark.privileged


def test_connect_runs_in_the_pod_and_leaves_the_caller_alone(mini_lab: MiniLab) -> None:
    mini_lab.start_echo("web-1")
    before = os.readlink("/proc/thread-self/ns/net")
    with netns.connect(mini_lab.netns("client-0"), mini_lab.pods["web-1"].ip, ECHO_PORT) as sock:
        assert sock.gettimeout() is None  # blocking
        assert sock.getsockname()[0] == mini_lab.pods["client-0"].ip
        assert sock.makefile().readline().split()[0] == "web-1"
    assert os.readlink("/proc/thread-self/ns/net") == before


def test_async_streams(mini_lab: MiniLab) -> None:
    mini_lab.start_echo("web-2")

    async def fetch() -> bytes:
        reader, writer = await netns.open_connection(mini_lab.netns("client-1"),
                                                      mini_lab.pods["web-2"].ip, ECHO_PORT)
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line

    assert asyncio.run(fetch()).split()[0] == b"web-2"


def test_failures_are_os_errors(mini_lab: MiniLab) -> None:
    with pytest.raises(ConnectionRefusedError):
        netns.connect(mini_lab.netns("client-0"), mini_lab.pods["web-0"].ip, 9)
    with pytest.raises(FileNotFoundError, match=r"hm-pod-shop\.nope"):
        netns.connect("hm-pod-shop.nope", "10.244.1.10", 80)

    async def unreachable() -> None:
        await netns.open_connection(mini_lab.netns("client-0"), "10.244.1.250", 80, timeout=0.3)

    with pytest.raises(TimeoutError):
        asyncio.run(unreachable())


def test_cost_per_call(mini_lab: MiniLab) -> None:
    mini_lab.start_echo("web-0")
    ns, ip, calls = mini_lab.netns("client-0"), mini_lab.pods["web-0"].ip, 200
    start = time.perf_counter()
    for _ in range(calls):
        netns.socket_in(ns).close()
    create = (time.perf_counter() - start) / calls
    start = time.perf_counter()
    for _ in range(calls):
        netns.connect(ns, ip, ECHO_PORT).close()
    connect = (time.perf_counter() - start) / calls

    async def many() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            _, writer = await netns.open_connection(ns, ip, ECHO_PORT)
            writer.close()
        return (time.perf_counter() - start) / calls

    aconnect = asyncio.run(many())
    print(f"\nper call: socket_in {create * 1e6:.0f} us, connect {connect * 1e6:.0f} us, "
          f"open_connection {aconnect * 1e6:.0f} us")
    assert create < 0.01 and connect < 0.01 and aconnect < 0.01  # generous: shared CI cores
