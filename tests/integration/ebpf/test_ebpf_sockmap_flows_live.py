"""sockmap and flows together: a same-node connection whose payload sk_msg carried past TCP
still reports its exact bytes at close (sockmap counts them in the shared hm_sock_bytes)."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import cgroup2_root
from ebpf_env import TAG
from sockmap_env import PORT, Pod, bridged_pods

from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf.flows import Flow, Flows
from hybridmesh.ebpf.sockmap import SockMap

pytestmark = pytest.mark.privileged

_serial = itertools.count()


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    with bridged_pods(f"{TAG}-sf{next(_serial)}", cgroup2_root()) as made:
        yield made


@pytest.fixture
def loaded(built: None, pods: list[Pod]) -> Iterator[tuple[SockMap, Flows]]:
    """sockmap on both pods, flows following both; flows loads first (it creates the shared
    map, sockmap reuses it: the order the agent does not promise)."""
    n = next(_serial)
    dirs = [bpffs.pin_dir(f"{TAG}-sf{n}-{what}") for what in ("sm", "flows", "shared")]
    sm_dir, flows_dir, shared = dirs
    opened: list[SockMap | Flows] = []
    try:
        flows = Flows.load(flows_dir, shared_dir=shared)
        opened.append(flows)
        sm = SockMap.load(sm_dir, shared)
        opened.append(sm)
        for pod in pods:
            sm.attach(pod.cgroup)
        sm.set_local_ips(p.ip for p in pods)
        flows.set_local((os.stat(p.netns).st_ino, p.ip) for p in pods)
        yield sm, flows
    finally:
        for obj in opened:
            obj.close()
        SockMap.remove(sm_dir)
        Flows.remove(flows_dir)
        bpffs.remove_pin_dir(shared)


def _exchange(sender: socket.socket, receiver: socket.socket, size: int) -> None:
    payload = os.urandom(size)
    t = threading.Thread(target=sender.sendall, args=(payload,))
    t.start()
    got = bytearray()
    receiver.settimeout(10)
    while len(got) < size:
        part = receiver.recv(size - len(got))
        assert part, "peer closed early"
        got += part
    t.join(10)
    assert bytes(got) == payload


def _closes(flows: Flows, count: int, timeout: float = 5.0) -> list[Flow]:
    seen: list[Flow] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        seen += [f for f in flows.consume() if f.kind == "close"]
        time.sleep(0.02)
    return seen


@pytest.mark.parametrize("client_closes_first", [True, False])
def test_accelerated_connection_reports_its_exact_bytes(
    loaded: tuple[SockMap, Flows], pods: list[Pod], client_closes_first: bool
) -> None:
    sm, flows = loaded
    sent, replied = 3 * 65536 + 77, 123_457
    with pods[1].listen() as listener:
        client = pods[0].connect(pods[1].ip)
        listener.settimeout(10)
        server, _ = listener.accept()
    port = client.getsockname()[1]
    _exchange(client, server, sent)
    _exchange(server, client, replied)
    for sock in (client, server) if client_closes_first else (server, client):
        sock.close()
    closes = {(f.local_ip, f.local_port): f for f in _closes(flows, 2)}
    assert sm.counters().redirected_bytes == sent + replied  # it was accelerated
    client_end, server_end = closes[(pods[0].ip, port)], closes[(pods[1].ip, PORT)]
    assert client_end.redirected and server_end.redirected
    assert client_end.payload == (sent, replied)
    assert server_end.payload == (replied, sent)


def test_entries_are_gone_after_the_close(loaded: tuple[SockMap, Flows], pods: list[Pod]) -> None:
    sm, flows = loaded
    with pods[1].listen() as listener:
        client = pods[0].connect(pods[1].ip)
        listener.settimeout(10)
        server, _ = listener.accept()
    _exchange(client, server, 1000)
    assert sorted(sm.redirected().values()) == [(0, 1000), (1000, 0)]
    client.close()
    server.close()
    assert len(_closes(flows, 2)) == 2
    assert sm.redirected() == {}
