"""Live tests of node steering: a node netns with a bridge, two pods (netns + cgroup with an
``app`` leaf, as the lab makes them) and a listener standing in for the node proxy at
gateway:15001. Run inside ``tools/sandbox``; nothing skips (a missing hook fails).
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from hybridmesh.agent.datapath import NodeState, PodView
from hybridmesh.agent.dp_nodesteer import NodeSteerDatapath
from hybridmesh.agent.nodeproxy._libbpf_nodesrc import create_source_map
from hybridmesh.agent.nodeproxy.source import (
    BpfSourceResolver,
    CgroupIndex,
    pack_key,
    unpack_value,
)
from hybridmesh.ebpf import _libbpf, bpffs
from hybridmesh.ebpf.nodesteer import NodeSteer, SrcEntry

pytestmark = pytest.mark.privileged

TAG = f"hm-t{os.getpid()}"
GATEWAY, POD_A, POD_B = "10.244.77.1", "10.244.77.10", "10.244.77.11"
VIP, VIP_PORT, POD_PORT, PROXY_PORT = "10.96.77.10", 80, 8080, 15001

# The helper processes (listener and clients), run with ``python -c`` inside a netns.
PEER = r"""
import json, socket, sys, threading
def out(**kw): print(json.dumps(kw), flush=True)
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
if mode == "serve":
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port)); ls.listen(1024); out(ready=True)
    def hold(c):
        while c.recv(4096): pass
        c.close()
    while True:
        c, peer = ls.accept(); out(peer=list(peer), local=list(c.getsockname()))
        threading.Thread(target=hold, args=(c,), daemon=True).start()
elif mode == "connect":
    s = socket.socket(family)
    if len(sys.argv) > 4: s.bind((sys.argv[4], 0))
    try: s.connect((host, port))
    except OSError as e: out(error=e.errno); sys.exit(0)
    out(local=list(s.getsockname()), peer=list(s.getpeername()))
    sys.stdin.read(); s.close()
else:
    ok = wrong = failed = 0
    for _ in range(int(sys.argv[4])):
        s = socket.socket(family)
        try:
            s.connect((host, port))
            if s.getpeername()[:2] == (host, port): ok += 1
            else: wrong += 1
        except OSError: failed += 1
        finally: s.close()
    out(ok=ok, wrong=wrong, failed=failed)
"""


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _cgroup2_root() -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2":
            return Path(fields[4])
    pytest.fail("no cgroup2 mount: node steering needs cgroup v2")


@dataclass
class Pod:
    netns: str
    ip: str
    cgroup: Path  # the pod's cgroup; processes run in its ``app`` leaf, as in the lab

    @property
    def cgroup_id(self) -> int:
        return os.stat(self.cgroup).st_ino

    def popen(self, *args: str) -> subprocess.Popen[str]:
        cmd = ["ip", "netns", "exec", self.netns, sys.executable, "-c", PEER, *args]
        join = f'echo $$ > "{self.cgroup / "app"}/cgroup.procs" && exec "$@"'
        return subprocess.Popen(["sh", "-c", join, "sh", *cmd], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip

    def connect(self, host: str, port: int, bind: str | None = None) -> Conn:
        proc = self.popen("connect", host, str(port), *([bind] if bind else []))
        assert proc.stdout is not None
        return Conn(proc, json.loads(proc.stdout.readline()))

    def loop(self, host: str, port: int, count: int) -> dict[str, int]:
        proc = self.popen("loop", host, str(port), str(count))
        out, _ = proc.communicate(timeout=60)
        result: dict[str, int] = json.loads(out)
        return result


@dataclass
class Conn:
    proc: subprocess.Popen[str]
    seen: dict[str, Any]  # the client's getsockname/getpeername, or its connect errno

    @property
    def local(self) -> tuple[str, int]:
        return (self.seen["local"][0].removeprefix("::ffff:"), self.seen["local"][1])

    def close(self) -> None:
        self.proc.communicate("", timeout=10)


class Listener:
    """The node proxy's stand-in: reports every accepted (peer, local); holds connections."""

    def __init__(self, netns: str, host: str, port: int) -> None:
        cmd = ["ip", "netns", "exec", netns, sys.executable, "-c", PEER, "serve", host, str(port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.accepted: queue.Queue[dict[str, Any]] = queue.Queue()
        assert self.proc.stdout is not None
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.accepted.put(json.loads(line))

    def next(self) -> tuple[tuple[str, int], tuple[str, int]]:
        got = self.accepted.get(timeout=10)
        return (got["peer"][0], got["peer"][1]), (got["local"][0], got["local"][1])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@dataclass
class Env:
    node: str
    a: Pod
    b: Pod
    proxy: Listener
    pin_dir: Path


def _pod(node: str, name: str, ip: str, cgroups: list[Path]) -> Pod:
    netns = f"{node}-{name}"
    _sh("ip", "netns", "add", netns)
    _sh("ip", "-n", node, "link", "add", f"hm-v{name}", "type", "veth", "peer", "name", "eth0",
        "netns", netns)  # fmt: skip
    _sh("ip", "-n", node, "link", "set", f"hm-v{name}", "master", "hm-br0", "up")
    for cmd in ("link set lo up", "link set eth0 up", f"addr add {ip}/24 dev eth0",
                f"route add default via {GATEWAY}"):  # fmt: skip
        _sh("ip", "-n", netns, *cmd.split())
    cgroup = _cgroup2_root() / f"{node}-{name}"
    (cgroup / "app").mkdir(parents=True)
    cgroups.append(cgroup)
    return Pod(netns, ip, cgroup)


def _rmdir(path: Path) -> None:
    for _ in range(100):  # an exiting process still counts for a moment
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


@pytest.fixture
def env(built: None) -> Iterator[Env]:
    node, cgroups, listener = f"{TAG}-node", list[Path](), None
    pin_dir = bpffs.pin_dir(f"{TAG}-nodesteer")
    try:
        _sh("ip", "netns", "add", node)
        for cmd in ("link set lo up", "link add hm-br0 type bridge", "link set hm-br0 up",
                    f"addr add {GATEWAY}/24 dev hm-br0"):  # fmt: skip
            _sh("ip", "-n", node, *cmd.split())
        a, b = _pod(node, "a", POD_A, cgroups), _pod(node, "b", POD_B, cgroups)
        listener = Listener(node, GATEWAY, PROXY_PORT)
        yield Env(node, a, b, listener, pin_dir)
    finally:
        if listener is not None:
            listener.stop()
        NodeSteer.remove(pin_dir)
        for name in (f"{node}-a", f"{node}-b", node):
            if Path("/run/netns", name).exists():
                _sh("ip", "netns", "del", name)
        for cgroup in cgroups:
            _rmdir(cgroup / "app")
            _rmdir(cgroup)


@pytest.fixture
def steer(env: Env) -> Iterator[NodeSteer]:
    loaded = NodeSteer.load(env.pin_dir, (GATEWAY, PROXY_PORT))
    try:
        loaded.attach(env.a.cgroup)
        loaded.attach(env.b.cgroup)
        yield loaded
    finally:
        loaded.close()


def _entry(steer: NodeSteer, peer: tuple[str, int]) -> SrcEntry | None:
    return next((e for e in steer.entries() if e.peer == (IPv4Address(peer[0]), peer[1])), None)


def _wait_gone(steer: NodeSteer, peer: tuple[str, int]) -> bool:
    deadline = time.monotonic() + 5
    while _entry(steer, peer) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("destination", [(POD_B, POD_PORT), (VIP, VIP_PORT)], ids=["pod", "vip"])
def test_connect_lands_on_the_proxy_with_the_callers_cgroup(
    env: Env, steer: NodeSteer, destination: tuple[str, int]
) -> None:
    conn = env.a.connect(*destination)
    assert conn.seen["peer"] == list(destination)  # getpeername: what the app dialled
    peer, local = env.proxy.next()
    assert (peer, local) == (conn.local, (GATEWAY, PROXY_PORT))
    entry = _entry(steer, peer)
    assert entry is not None
    assert entry.cgroup_id == env.a.cgroup_id  # the pod's cgroup, not the app leaf it ran in
    assert entry.destination == (IPv4Address(destination[0]), destination[1])
    assert entry.local == (IPv4Address(GATEWAY), PROXY_PORT)
    conn.close()
    assert _wait_gone(steer, peer), "the entry outlived the connection"
    assert steer.counters().closed == 1


def test_a_v4_mapped_ipv6_socket_is_steered_too(env: Env, steer: NodeSteer) -> None:
    conn = env.a.connect(f"::ffff:{VIP}", VIP_PORT)
    assert conn.seen["peer"][:2] == [f"::ffff:{VIP}", VIP_PORT]
    peer, _ = env.proxy.next()
    assert peer[0] == POD_A
    entry = _entry(steer, peer)
    assert entry is not None
    assert (entry.cgroup_id, entry.destination) == (env.a.cgroup_id, (IPv4Address(VIP), VIP_PORT))
    conn.close()
    assert _wait_gone(steer, peer)
    assert env.a.loop(f"::ffff:{VIP}", VIP_PORT, 5) == {"ok": 5, "wrong": 0, "failed": 0}


def test_forged_source_ip_keeps_the_forgers_identity(env: Env, steer: NodeSteer) -> None:
    # pod b takes pod a's address, and the node believes it (the attacker won ARP)
    _sh("ip", "-n", env.b.netns, "addr", "add", f"{POD_A}/32", "dev", "eth0")
    mac = json.loads(_sh("ip", "-n", env.b.netns, "-j", "link", "show", "eth0"))[0]["address"]
    _sh("ip", "-n", env.node, "neigh", "replace", POD_A, "lladdr", mac, "dev", "hm-br0",
        "nud", "permanent")  # fmt: skip
    conn = env.b.connect(VIP, VIP_PORT, bind=POD_A)
    assert conn.local[0] == POD_A
    peer, _ = env.proxy.next()
    assert peer == conn.local  # to the proxy, the connection comes from pod a's address...
    entry = _entry(steer, peer)
    assert entry is not None
    assert entry.cgroup_id == env.b.cgroup_id != env.a.cgroup_id  # ...but from pod b's cgroup
    conn.close()


def test_the_real_source_resolver_reads_and_takes_the_entry(env: Env, steer: NodeSteer) -> None:
    index = CgroupIndex()
    index.set_pods({"shop/a-0": env.a.cgroup, "shop/b-0": env.b.cgroup})
    resolver = BpfSourceResolver(env.pin_dir / "hm_node_src", index)
    try:
        conn = env.b.connect(POD_A, POD_PORT)
        peer, local = env.proxy.next()
        steered = resolver.resolve(peer, local)
        assert steered is not None
        assert (steered.pod, steered.destination) == ("shop/b-0", (POD_A, POD_PORT))
        assert resolver.resolve(peer, local) is None  # read once
        conn.close()
    finally:
        resolver.close()


def test_a_map_the_proxy_pinned_first_is_reused(env: Env) -> None:
    proxy_fd = create_source_map(env.pin_dir / "hm_node_src")  # the node proxy started first
    try:
        loaded = NodeSteer.load(env.pin_dir, (GATEWAY, PROXY_PORT))
        try:
            loaded.attach(env.a.cgroup)
            conn = env.a.connect(POD_B, POD_PORT)
            peer, local = env.proxy.next()
            raw = (ctypes.c_ubyte * 16)()
            key = (ctypes.c_ubyte * 12).from_buffer_copy(pack_key(peer, local))
            assert _libbpf.map_lookup(proxy_fd, key, raw)  # the proxy's own fd sees the entry
            assert unpack_value(bytes(raw)) == (env.a.cgroup_id, (POD_B, POD_PORT))
            conn.close()
        finally:
            loaded.close()
    finally:
        os.close(proxy_fd)


def test_loopback_and_the_node_itself_are_not_steered(env: Env, steer: NodeSteer) -> None:
    server = env.b.popen("serve", "0.0.0.0", str(POD_PORT))
    try:
        assert server.stdout is not None and json.loads(server.stdout.readline())["ready"]
        local = env.b.loop("127.0.0.1", POD_PORT, 3)  # inside the pod: stays there
        # the node netns, outside every pod cgroup (where the node proxy runs): not steered
        node = subprocess.run(["ip", "netns", "exec", env.node, sys.executable, "-c", PEER, "loop",
                               POD_B, str(POD_PORT), "3"], capture_output=True, text=True,
                              check=True, timeout=30)  # fmt: skip
        assert local == {"ok": 3, "wrong": 0, "failed": 0}
        assert json.loads(node.stdout) == {"ok": 3, "wrong": 0, "failed": 0}
        assert steer.counters().steered == 0 and env.proxy.accepted.empty()
    finally:
        server.kill()
        server.wait()


def test_reload_keeps_steering_without_a_gap(env: Env, steer: NodeSteer) -> None:
    before = steer.program_ids()
    client = env.a.popen("loop", POD_B, str(POD_PORT), "300")  # nothing listens on b: unsteered
    reloads = 0  # connects would fail with ECONNREFUSED
    while client.poll() is None and reloads < 50:
        NodeSteer.load(env.pin_dir, (GATEWAY, PROXY_PORT)).close()
        reloads += 1
    out, _ = client.communicate(timeout=60)
    assert json.loads(out) == {"ok": 300, "wrong": 0, "failed": 0}
    assert reloads >= 3
    after = NodeSteer.load(env.pin_dir, (GATEWAY, PROXY_PORT))
    try:
        assert after.attached() == sorted([env.a.cgroup_id, env.b.cgroup_id])
        assert set(after.program_ids().values()).isdisjoint(before.values())
        deadline = time.monotonic() + 5
        while after.entries() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert after.entries() == []  # every close removed its entry, across the reloads
        counters = after.counters()
        assert (counters.steered, counters.established, counters.closed) == (300, 300, 300)
    finally:
        after.close()


def test_per_connect_kernel_cost(env: Env, steer: NodeSteer) -> None:
    stats_fd = _libbpf.enable_run_stats()
    try:
        before = steer.program_stats()
        assert env.a.loop(VIP, VIP_PORT, 200) == {"ok": 200, "wrong": 0, "failed": 0}
        after = steer.program_stats()
    finally:
        os.close(stats_fd)
    runs = {h: after[h].run_cnt - before[h].run_cnt for h in after}
    ns = {h: (after[h].run_time_ns - before[h].run_time_ns) / max(runs[h], 1) for h in after}
    assert runs["connect4"] == 200 and runs["getpeername4"] == 200
    assert runs["sockops"] >= 400  # established + the close state callback, per connection
    total = sum(after[h].run_time_ns - before[h].run_time_ns for h in after) / 200
    print(f"\nnodesteer per run: connect4 {ns['connect4']:.0f} ns, getpeername4 "
          f"{ns['getpeername4']:.0f} ns, sockops {ns['sockops']:.0f} ns x "
          f"{runs['sockops'] / 200:.1f} callbacks; all per connection {total:.0f} ns")  # fmt: skip


def test_datapath_follows_node_pods(env: Env) -> None:
    def view(name: str, pod: Pod, placement: str) -> PodView:
        return PodView("shop", name, pod.ip, "n1", "sa", placement, cgroup=pod.cgroup)

    dp = NodeSteerDatapath("n1", pin_dir=env.pin_dir)
    try:
        pods = (view("a-0", env.a, "node"), view("b-0", env.b, "kernel"))
        dp.sync(NodeState("n1", 1, pods, (), (), pod_cidr="10.244.77.0/24"))  # no gateway given
        assert dp.status().detail["pods"] == ["shop/a-0"]
        assert env.a.connect(POD_B, POD_PORT).seen["peer"] == [POD_B, POD_PORT]
        assert env.proxy.next()[1] == (GATEWAY, PROXY_PORT)
        assert "error" in env.b.connect(POD_A, POD_PORT).seen  # kernel pod: not steered
        dp.sync(NodeState("n1", 2, (view("b-0", env.b, "kernel"),), (), (), gateway=GATEWAY))
        status = dp.status()
        assert status.detail["pods"] == [] and status.detail["steered"] == 1
        assert "error" in env.a.connect(POD_B, POD_PORT).seen  # a left: detached
    finally:
        dp.remove()
