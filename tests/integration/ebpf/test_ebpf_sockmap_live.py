"""sockmap for real: two pods on a bridge, their sockets accelerated socket-to-socket.

What "accelerated" means is checked from outside the program's own counters too: an iptables
DROP in the server's netns does not stop redirected bytes (they never become packets), and
does stop them once the policy epoch moved (they are packets again).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from conftest import cgroup2_root
from ebpf_env import TAG
from sockmap_env import PORT, Pod, bridged_pods

from hybridmesh.agent.datapath import NodeState, PodView
from hybridmesh.agent.dp_sockmap import SockMapDatapath
from hybridmesh.ebpf import _libbpf, bpffs
from hybridmesh.ebpf.l4policy import L4Policy
from hybridmesh.ebpf.sockmap import SocketTuple, SockMap, sock_key

pytestmark = pytest.mark.privileged

MIB = 1 << 20
_serial = itertools.count()


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    with bridged_pods(f"{TAG}-sm{next(_serial)}", cgroup2_root()) as made:
        yield made


@pytest.fixture
def dirs(built: None) -> Iterator[tuple[Path, Path]]:
    n = next(_serial)
    pin_dir, shared = bpffs.pin_dir(f"{TAG}-sm{n}"), bpffs.pin_dir(f"{TAG}-sm{n}-shared")
    try:
        yield pin_dir, shared
    finally:
        SockMap.remove(pin_dir)
        bpffs.remove_pin_dir(shared)


@pytest.fixture
def sm(dirs: tuple[Path, Path], pods: list[Pod]) -> Iterator[SockMap]:
    """Loaded, attached to both pods, both pod addresses local."""
    loaded = SockMap.load(*dirs)
    try:
        for pod in pods:
            loaded.attach(pod.cgroup)
        loaded.set_local_ips(p.ip for p in pods)
        yield loaded
    finally:
        loaded.close()


def _recv_exact(sock: socket.socket, n: int, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    chunks, got = [], 0
    while got < n:
        part = sock.recv(min(n - got, MIB))
        if not part:
            break
        chunks.append(part)
        got += len(part)
    return b"".join(chunks)


def _send_recv(sender: socket.socket, receiver: socket.socket, payload: bytes) -> bytes:
    """Send from one thread while receiving in this one (a 1 MiB send outgrows any buffer)."""
    errors: list[BaseException] = []

    def send() -> None:
        try:
            sender.sendall(payload)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=send)
    t.start()
    got = _recv_exact(receiver, len(payload))
    t.join(10)
    assert not errors, errors
    return got


def _pair(client_pod: Pod, server_pod: Pod) -> tuple[socket.socket, socket.socket]:
    with server_pod.listen() as listener:
        client = client_pod.connect(server_pod.ip)
        listener.settimeout(10)
        server, _ = listener.accept()
    return client, server


def _tuple(sock: socket.socket) -> SocketTuple:
    (lip, lport), (rip, rport) = sock.getsockname(), sock.getpeername()
    return SocketTuple(IPv4Address(lip), lport, IPv4Address(rip), rport)


def _wait(condition: object, timeout: float = 3) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


def test_bytes_cross_socket_to_socket_both_ways(sm: SockMap, pods: list[Pod]) -> None:
    client, server = _pair(pods[0], pods[1])
    with client, server:
        assert _tuple(client) in sm and _tuple(server) in sm
        small, large = b"ping", os.urandom(MIB + 12345)
        assert _send_recv(client, server, small) == small
        assert _send_recv(server, client, small[::-1]) == small[::-1]
        assert _send_recv(client, server, large) == large
        assert _send_recv(server, client, large[::-1]) == large[::-1]
    c = sm.counters()
    assert c.admitted == 2
    assert c.redirected_bytes == 2 * (len(small) + len(large))
    assert c.pass_no_peer == c.pass_epoch == 0


def test_half_close_and_close_reach_the_peer(sm: SockMap, pods: list[Pod]) -> None:
    client, server = _pair(pods[0], pods[1])
    with client, server:
        peer_tuples = [_tuple(client), _tuple(server)]
        client.sendall(b"request")
        client.shutdown(socket.SHUT_WR)
        assert _recv_exact(server, 100, timeout=5) == b"request"  # then EOF, not a timeout
        server.sendall(b"answer after the client's FIN")
        assert _recv_exact(client, 29) == b"answer after the client's FIN"
        server.close()
        assert client.recv(10) == b""
    assert _wait(lambda: not any(t in sm for t in peer_tuples)), sm.sockets()
    assert sm.sockets() == []
    assert sm.counters().redirected_msgs >= 2


def test_a_peer_that_is_not_local_is_not_accelerated(sm: SockMap, pods: list[Pod]) -> None:
    sm.set_local_ips([pods[0].ip])  # the server's address is not local (as for another node)
    client, server = _pair(pods[0], pods[1])
    with client, server:
        assert _send_recv(client, server, b"x" * 1000) == b"x" * 1000
        assert _send_recv(server, client, b"y" * 1000) == b"y" * 1000
        assert sm.sockets() == []
    c = sm.counters()
    assert (c.admitted, c.redirected_msgs) == (0, 0)
    assert c.not_local == 2


def test_an_unattached_peer_passes_through_tcp(dirs: tuple[Path, Path], pods: list[Pod]) -> None:
    with SockMap.load(*dirs) as sm:
        sm.attach(pods[0].cgroup)  # only the client's pod
        sm.set_local_ips(p.ip for p in pods)
        client, server = _pair(pods[0], pods[1])
        with client, server:
            assert _send_recv(client, server, b"hello") == b"hello"
            assert sm.sockets() == [_tuple(client)]
        c = sm.counters()
        assert (c.admitted, c.redirected_msgs, c.pass_no_peer) == (1, 0, 1)
        sm.detach()


def test_remove_never_loses_unread_bytes(sm: SockMap, dirs: tuple[Path, Path],
                                         pods: list[Pod]) -> None:  # fmt: skip
    """Deleting a socket from a sockhash frees its queue of redirected, unread bytes: remove()
    must leave established sockets in it (they leave when they close)."""
    client, server = _pair(pods[0], pods[1])
    with client, server:
        client.sendall(b"unread")
        assert sm.counters().redirected_msgs == 1
        sm.close()
        SockMap.remove(dirs[0])
        assert _recv_exact(server, 6) == b"unread"


def test_once_tcp_carried_bytes_a_socket_never_redirects(sm: SockMap,
                                                         pods: list[Pod]) -> None:  # fmt: skip
    """A client that wrote before its peer was in the sockhash keeps using TCP: a redirected
    message would overtake the packets still on their way (the peer reads redirected first)."""
    sm.detach(pods[1].cgroup)
    client, server = _pair(pods[0], pods[1])
    with client, server:
        client.sendall(b"1")
        key = sock_key(_tuple(server))
        _libbpf.map_update(sm.sock_hash_fd, key, ctypes.c_uint64(server.fileno()))
        assert _tuple(server) in sm  # the peer is there now, as if its sockops ran late
        client.sendall(b"2")
        assert _recv_exact(server, 2) == b"12"
    c = sm.counters()
    assert (c.redirected_msgs, c.pass_no_peer) == (0, 2)


def test_epoch_bump_sends_established_traffic_through_policy(sm: SockMap,
                                                            pods: list[Pod]) -> None:  # fmt: skip
    """Redirected bytes skip netfilter (the bypass Cilium shipped); after the epoch moves they
    are packets again and a DROP in the server's netns stops them."""
    client, server = _pair(pods[0], pods[1])
    pods[1].iptables("-A", "INPUT", "-p", "tcp", "--dport", str(PORT), "-j", "DROP")
    with client, server:
        assert _send_recv(client, server, b"before") == b"before"  # the DROP never sees it
        sm.bump_epoch()
        client.sendall(b"after")
        assert _recv_exact_or_timeout(server, 5, 1.0) == b""
        c = sm.counters()
        assert c.pass_epoch == 1 and c.redirected_msgs == 1
        pods[1].iptables("-D", "INPUT", "-p", "tcp", "--dport", str(PORT), "-j", "DROP")
        assert _recv_exact(server, 5) == b"after"  # retransmitted through the stack
        assert _send_recv(server, client, b"reply") == b"reply"
    assert sm.counters().redirected_msgs == 1


def test_l4policy_bumps_the_epoch_sockmap_reads(dirs: tuple[Path, Path],
                                                pods: list[Pod]) -> None:  # fmt: skip
    """The shared agreement for real: both objects use one pinned hm_policy_epoch. l4policy
    loads first (as in the agent, which creates datapaths in name order), so sockmap is the
    one reusing the other's pin."""
    l4_pins = dirs[0].with_name(dirs[0].name + "-l4")
    l4 = L4Policy.load(l4_pins, dirs[1])
    try:
        with SockMap.load(*dirs) as sm:
            for pod in pods:
                sm.attach(pod.cgroup)
            sm.set_local_ips(p.ip for p in pods)
            client, server = _pair(pods[0], pods[1])
            with client, server:
                assert _send_recv(client, server, b"a") == b"a"
                assert l4.bump_epoch() == sm.epoch() == 1
                assert _send_recv(client, server, b"b") == b"b"
            c = sm.counters()
            assert (c.redirected_msgs, c.pass_epoch) == (1, 1)
    finally:
        l4.close()
        L4Policy.remove(l4_pins)


def _recv_exact_or_timeout(sock: socket.socket, n: int, timeout: float) -> bytes:
    try:
        return _recv_exact(sock, n, timeout)
    except TimeoutError:
        return b""


def test_loader_restart_keeps_established_connections(sm: SockMap, dirs: tuple[Path, Path],
                                                      pods: list[Pod]) -> None:  # fmt: skip
    client, server = _pair(pods[0], pods[1])
    with client, server:
        assert _send_recv(client, server, b"one") == b"one"
        old_ids = sm.program_ids()
        sm.close()
        with SockMap.load(*dirs) as again:
            assert again.program_ids() != old_ids
            assert again.attached() == sorted(os.stat(p.cgroup).st_ino for p in pods)
            big = os.urandom(MIB)
            assert _send_recv(client, server, big) == big
            assert _send_recv(server, client, b"two") == b"two"
            assert again.counters().redirected_bytes == 3 + MIB + 3
            client2, server2 = _pair(pods[0], pods[1])  # new connections: the new programs
            with client2, server2:
                assert _send_recv(client2, server2, b"new") == b"new"
            assert again.counters().admitted == 4


def test_loopback_tuples_are_scoped_by_netns(sm: SockMap, pods: list[Pod]) -> None:
    """The same 127.0.0.1 tuple in two pods (app<->sidecar hops) reaches each pod's own peer."""
    pairs = []
    for pod in pods:
        with pod.listen("127.0.0.1", 15001) as listener:
            client = pod.connect("127.0.0.1", 15001, bind=("127.0.0.1", 40000))
            listener.settimeout(10)
            pairs.append((client, listener.accept()[0]))
    try:
        assert len(sm.sockets()) == 4
        assert {t.netns for t in sm.sockets()} - {0} and all(t.netns for t in sm.sockets())
        for i, (client, server) in enumerate(pairs):
            assert _send_recv(client, server, f"pod {i}".encode()) == f"pod {i}".encode()
            assert _send_recv(server, client, b"back") == b"back"
        assert sm.counters().redirected_msgs == 4
    finally:
        for client, server in pairs:
            client.close()
            server.close()


def _state(pods: list[Pod], placements: list[str]) -> NodeState:
    views = [
        PodView("ns", f"p{i}", pod.ip, "n1", "sa", placement, cgroup=pod.cgroup)
        for i, (pod, placement) in enumerate(zip(pods, placements, strict=True))
    ]
    remote = PodView("ns", "far", "10.201.0.99", "n2", "sa", "kernel")  # another node's
    return NodeState("n1", 1, (*views, remote), (), ())  # fmt: skip


def test_datapath_follows_the_node_state(dirs: tuple[Path, Path], pods: list[Pod]) -> None:
    dp = SockMapDatapath("n1", *dirs)
    try:
        dp.sync(_state(pods, ["kernel", "sidecar+ebpf"]))
        client, server = _pair(pods[0], pods[1])
        with client, server:
            assert _send_recv(client, server, b"fast") == b"fast"
            status = dp.status().to_json()
            assert status["detail"]["pods"] == ["ns/p0", "ns/p1"]
            assert status["detail"]["redirected_msgs"] == 1
            fill = {m["name"]: m["entries"] for m in status["maps"]}
            assert (fill["sock_hash"], fill["local_ips"]) == (2, 2)
            assert {p["name"] for p in status["programs"]} == {"hm_sockops", "hm_sk_msg"}

            dp.sync(_state(pods, ["kernel", "none"]))  # p1 leaves the accelerated placements
            assert dp.status().detail["pods"] == ["ns/p0"]
            c2, s2 = _pair(pods[0], pods[1])
            with c2, s2:
                assert _send_recv(c2, s2, b"slow") == b"slow"
            assert dp.status().detail["redirected_msgs"] == 1  # the new pair went through TCP

            dp.close()  # an agent restart: a new datapath takes over the pins
            dp = SockMapDatapath("n1", *dirs)
            dp.sync(_state(pods, ["kernel", "sidecar+ebpf"]))
            assert _send_recv(server, client, b"still fast") == b"still fast"
            assert dp.status().detail["redirected_msgs"] == 2

            dp.remove()  # cold start: pins gone, the established pair unharmed
            assert not dirs[0].exists()
            assert _send_recv(client, server, b"after remove") == b"after remove"
            assert _send_recv(server, client, b"both ways") == b"both ways"
    finally:
        dp.remove()
