"""flows for real: two pod netns joined by a veth, connections between them, records read back.

A third netns reuses the client pod's address: tracepoints see it too, and nothing of it may be
reported (the kernel filter keys on the netns as well as the address).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ebpf_env import TAG

from hybridmesh.agent.datapath import FlowEvent, NodeState, PodView
from hybridmesh.agent.dp_flows import FlowsDatapath
from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf.flows import Flow, Flows

pytestmark = pytest.mark.privileged

PEER = Path(__file__).with_name("flowpeer.py")
CLIENT_IP, SERVER_IP = "10.211.0.1", "10.211.0.2"
PORT = 7070
REPLY = 700
_serial = itertools.count()


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@dataclass
class Pods:
    client: str  # netns names
    server: str
    impostor: str  # holds CLIENT_IP too, and serves on it

    def connect(self, netns: str, ip: str, send: int, count: int = 1) -> list[dict[str, int]]:
        argv = ["ip", "netns", "exec", netns, sys.executable, str(PEER), "connect", ip,
                str(PORT), str(send), str(count)]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
        seen: list[dict[str, int]] = json.loads(out.stdout)
        return seen

    def stepped(self, send: int) -> subprocess.Popen[str]:
        """A client that has connected and waits for a line on stdin before sending."""
        argv = ["ip", "netns", "exec", self.client, sys.executable, str(PEER), "connect",
                SERVER_IP, str(PORT), str(send), "1", "--step"]  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "connected"
        return proc

    def node_state(self, *names: str) -> NodeState:
        """The pods as the agent would see them; ``names`` (client/server) are the local ones."""
        pods = tuple(
            PodView("t", role, ip, "n1" if role in names else "n2", "default", "kernel",
                    cgroup=Path("/sys/fs/cgroup") if role in names else None,
                    netns=Path("/run/netns", ns) if role in names else None)
            for role, ip, ns in (("client", CLIENT_IP, self.client),
                                 ("server", SERVER_IP, self.server))
        )  # fmt: skip
        return NodeState("n1", 1, pods, (), ())


def _serve(netns: str) -> subprocess.Popen[str]:
    argv = [sys.executable, str(PEER), "serve", str(PORT), str(REPLY)]
    server = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    return server


@pytest.fixture
def pods() -> Iterator[Pods]:
    base = f"{TAG}-f{next(_serial)}"
    names = Pods(f"{base}-c", f"{base}-s", f"{base}-x")
    servers: list[subprocess.Popen[str]] = []
    try:
        for ns in (names.client, names.server, names.impostor):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "-n", names.client, "link", "add", "hm-fc", "type", "veth", "peer", "name",
            "hm-fs", "netns", names.server)  # fmt: skip
        for ns, dev, ip in ((names.client, "hm-fc", CLIENT_IP), (names.server, "hm-fs", SERVER_IP)):
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh("ip", "-n", names.impostor, "addr", "add", f"{CLIENT_IP}/32", "dev", "lo")
        servers = [_serve(names.server), _serve(names.impostor)]
        yield names
    finally:
        for server in servers:
            server.kill()
            server.wait()
        for ns in (names.client, names.server, names.impostor):
            if Path("/run/netns", ns).exists():
                _sh("ip", "netns", "del", ns)


@pytest.fixture
def pin_dir(built: None) -> Iterator[Path]:
    path = bpffs.pin_dir(f"{TAG}-flows-{next(_serial)}")
    try:
        yield path
    finally:
        Flows.remove(path)


@pytest.fixture
def datapath(pin_dir: Path) -> Iterator[FlowsDatapath]:
    dp = FlowsDatapath("n1", pin_dir)
    try:
        yield dp
    finally:
        dp.close()


def _until(read: Callable[[], list[FlowEvent]], done: Callable[[list[FlowEvent]], bool],
           timeout: float = 5.0) -> list[FlowEvent]:  # fmt: skip
    """Everything ``read`` returns until ``done`` holds (closes trail the client's exit)."""
    seen: list[FlowEvent] = []
    deadline = time.monotonic() + timeout
    while not done(seen) and time.monotonic() < deadline:
        seen += read()
        time.sleep(0.02)
    return seen


def _kinds(events: list[FlowEvent], *kinds: str) -> list[FlowEvent]:
    return [e for e in events if e.kind in kinds]


def test_a_connection_between_local_pods_is_one_open_and_one_close(
    pods: Pods, datapath: FlowsDatapath
) -> None:
    datapath.sync(pods.node_state("client", "server"))
    before = time.time_ns()
    (seen,) = pods.connect(pods.client, SERVER_IP, 3000)
    events = _until(datapath.drain_events, lambda e: len(_kinds(e, "close")) >= 1)
    time.sleep(0.1)
    events += datapath.drain_events()
    assert [e.kind for e in events] == ["open", "close"]  # the accepting side is deduplicated
    for event in events:
        assert (event.src_ip, event.src_port) == (CLIENT_IP, seen["port"])
        assert (event.dst_ip, event.dst_port) == (SERVER_IP, PORT)
        assert before - 10**9 < event.time_ns < time.time_ns() + 10**9  # realtime, not boot
        assert event.node == "n1" and event.verdict == "FORWARDED"
    close = events[1]
    assert (close.bytes_sent, close.bytes_received) == (3000, REPLY)  # SYN/FIN taken off
    assert seen["received"] == REPLY
    assert close.rtt_us is not None and 0 < close.rtt_us < 1_000_000
    assert close.retransmits == 0


def test_the_server_side_reports_when_only_the_server_is_local(
    pods: Pods, datapath: FlowsDatapath
) -> None:
    datapath.sync(pods.node_state("server"))
    (seen,) = pods.connect(pods.client, SERVER_IP, 1234)
    events = _until(datapath.drain_events, lambda e: len(_kinds(e, "close")) >= 1)
    assert [e.kind for e in events] == ["open", "close"]
    assert {(e.src_ip, e.src_port, e.dst_ip, e.dst_port) for e in events} == {
        (CLIENT_IP, seen["port"], SERVER_IP, PORT)
    }
    assert (events[1].bytes_sent, events[1].bytes_received) == (1234, REPLY)  # client's view


def test_a_retransmit_is_counted(pods: Pods, datapath: FlowsDatapath) -> None:
    datapath.sync(pods.node_state("client", "server"))
    client = pods.stepped(5000)
    drop = ["ip", "netns", "exec", pods.server, "iptables", "-w", "-p", "tcp", "--dport",
            str(PORT), "-j", "DROP"]  # fmt: skip
    _sh(*drop[:6], "-I", "INPUT", *drop[6:])
    try:
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.flush()
        time.sleep(0.7)  # the minimum RTO is 200 ms: at least one retransmit
    finally:
        _sh(*drop[:6], "-D", "INPUT", *drop[6:])
    assert client.wait(timeout=30) == 0
    events = _until(datapath.drain_events, lambda e: len(_kinds(e, "close")) >= 1)
    retransmits = _kinds(events, "retransmit")
    assert retransmits, events
    assert {(e.src_ip, e.dst_ip, e.dst_port) for e in retransmits} == {(CLIENT_IP, SERVER_IP, PORT)}
    (close,) = _kinds(events, "close")
    assert close.retransmits >= 1
    assert datapath.status().detail["retransmits"] >= len(retransmits)


def test_the_same_address_in_another_netns_is_not_reported(
    pods: Pods, datapath: FlowsDatapath
) -> None:
    datapath.sync(pods.node_state("client", "server"))
    pods.connect(pods.impostor, CLIENT_IP, 100, count=3)  # both ends are CLIENT_IP, elsewhere
    time.sleep(0.2)
    assert datapath.drain_events() == []
    assert datapath.status().detail["events"] == 0
    pods.connect(pods.client, SERVER_IP, 100)  # while ours are
    assert _kinds(_until(datapath.drain_events, lambda e: len(e) >= 2), "open")


def test_a_full_ring_buffer_counts_what_it_lost(pods: Pods, pin_dir: Path) -> None:
    with Flows.load(pin_dir, ringbuf_bytes=4096) as flows:  # 56 records of 64 + 8 bytes
        flows.set_local([(0, CLIENT_IP), (0, SERVER_IP)])  # netns 0: any namespace
        pods.connect(pods.client, SERVER_IP, 10, count=40)  # 4 records each, nobody reading
        time.sleep(0.2)
        records = flows.consume()
        counters = flows.counters()
    assert counters.lost > 0
    assert counters.events == len(records)
    assert counters.events + counters.lost == 160


def test_a_reload_switches_programs_and_keeps_open_flows(pods: Pods, pin_dir: Path) -> None:
    first = Flows.load(pin_dir)
    first.set_local([(0, CLIENT_IP)])
    client = pods.stepped(100)
    opened = first.consume()
    first.close()
    with Flows.load(pin_dir) as second:
        assert second.generation == first.generation + 1
        assert second.links() == [f"link-hm_flow_retransmit-{second.generation}",
                                  f"link-hm_flow_state-{second.generation}"]  # fmt: skip
        assert second.local() == {(0, CLIENT_IP)}  # the pinned map was reused
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.close()
        assert client.wait(timeout=30) == 0

        def read() -> list[Flow]:
            return second.consume()

        closes: list[Flow] = []
        deadline = time.monotonic() + 5
        while not closes and time.monotonic() < deadline:
            closes += [f for f in read() if f.kind == "close"]
            time.sleep(0.02)
        time.sleep(0.1)
        closes += [f for f in read() if f.kind == "close"]
    assert [f.kind for f in opened] == ["open"]
    assert len(closes) == 1  # one generation reported it, not both
    assert closes[0].seen_open and closes[0].duration_ns > 0
    assert closes[0].local_port == opened[0].local_port


def test_status_names_programs_and_maps(pods: Pods, datapath: FlowsDatapath) -> None:
    datapath.sync(pods.node_state("client", "server"))
    status = datapath.status().to_json()
    assert [p["name"] for p in status["programs"]] == ["hm_flow_state", "hm_flow_retransmit"]
    assert all(p["id"] > 0 for p in status["programs"])
    maps = {m["name"]: m for m in status["maps"]}
    assert maps["local"]["entries"] == 2
    assert maps["events"]["kind"] == "ringbuf" and maps["events"]["maxEntries"] == 256 * 1024
    assert status["detail"]["pods"] == ["t/client", "t/server"]
    datapath.sync(pods.node_state("server"))
    assert datapath.status().to_json()["maps"][0]["entries"] == 1
