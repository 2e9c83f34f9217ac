"""l4policy.bpf.c live: a server pod's cgroup enforces identity policy on inbound TCP.

One netns holds three pod addresses (frontend, catalog, ratings); the catalog server runs in an
enforced cgroup, clients bind their pod address as source. A dropped SYN gets no SYN-ACK and no
RST: the client's connect() times out (we use 0.4 s), which is what these tests expect.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from ebpf_env import TAG

from hybridmesh.agent.datapath import NodeState, PodView
from hybridmesh.agent.dp_l4policy import L4PolicyDatapath
from hybridmesh.ebpf import _libbpf, bpffs
from hybridmesh.ebpf.l4compile import compile_state
from hybridmesh.ebpf.l4policy import DropEvent, L4Policy
from hybridmesh.ebpf.sockmap import SockMap
from hybridmesh.resources.models import AuthorizationPolicy

pytestmark = pytest.mark.privileged

PEER = Path(__file__).with_name("l4peer.py")
FRONTEND, CATALOG, RATINGS = "10.201.0.1", "10.201.0.2", "10.201.0.3"
V6_CLIENT, V6_SERVER = "fd00:4d::1", "fd00:4d::2"
TD = "cluster.local"
SHORT = "0.4"  # seconds a client waits for a connect or an echo
_serial = itertools.count()


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _policy(name: str, spec: dict[str, Any]) -> AuthorizationPolicy:
    return AuthorizationPolicy.model_validate({
        "apiVersion": "hybridmesh.io/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "shop"}, "spec": spec,
    })


ALLOW_FRONTEND = _policy("catalog-allow", {
    "selector": {"matchLabels": {"app": "catalog"}},
    "rules": [{"from": [{"source": {"principals": [f"spiffe://{TD}/ns/shop/sa/frontend"]}}],
               "to": [{"operation": {"ports": ["8080"]}}]}],
})
DENY_FRONTEND = _policy("no-frontend", {
    "action": "DENY",
    "rules": [{"from": [{"source": {"serviceAccounts": ["shop/frontend"]}}]}],
})


@dataclass
class Env:
    netns: str
    cgroup: Path
    l4: L4Policy
    client: subprocess.Popen[str]
    drops: list[DropEvent] = field(default_factory=list)

    def ask(self, command: str) -> str:
        assert self.client.stdin is not None and self.client.stdout is not None
        self.client.stdin.write(command + "\n")
        self.client.stdin.flush()
        return self.client.stdout.readline().strip()

    def connect(self, name: str, src: str, port: int = 8080, timeout: str = SHORT) -> str:
        return self.ask(f"connect {name} {src} {CATALOG} {port} {timeout}")

    def state(self, *policies: AuthorizationPolicy) -> NodeState:
        pods = (
            _pod("frontend", FRONTEND), _pod("ratings", RATINGS),
            _pod("catalog", CATALOG, cgroup=self.cgroup),
        )
        return NodeState("n1", 1, pods, (), policies, trust_domain=TD)

    def enforce(self, *policies: AuthorizationPolicy) -> bool:
        plan = compile_state(self.state(*policies))
        self.names = dict(plan.policies)
        return self.l4.apply(plan)

    def events(self) -> list[DropEvent]:
        self.l4.open_events(self.drops.append).poll(200)
        return self.drops

    def policy_of(self, event: DropEvent) -> str | None:
        return self.names.get(event.policy)

    names: dict[int, str] = field(default_factory=dict)


def _pod(app: str, ip: str, cgroup: Path | None = None) -> PodView:
    return PodView("shop", f"{app}-0", ip, "n1", app, "kernel", {"app": app}, True, cgroup)


def _in_cgroup(cgroup: Path, argv: list[str]) -> list[str]:
    return ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh", *argv]


@pytest.fixture
def pins(built: None) -> Iterator[tuple[Path, Path]]:
    n = next(_serial)
    own, shared = bpffs.pin_dir(f"{TAG}-l4-{n}"), bpffs.pin_dir(f"{TAG}-shared-{n}")
    try:
        yield own, shared
    finally:
        L4Policy.remove(own)
        bpffs.remove_pin_dir(shared)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"{TAG}-l4-{next(_serial)}"
    _sh("ip", "netns", "add", name)
    try:
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        _sh("ip", "-n", name, "link", "add", "hm-l40", "type", "veth", "peer", "name", "hm-l41")
        for dev in ("hm-l40", "hm-l41"):
            _sh("ip", "-n", name, "link", "set", dev, "up")
        for addr in (FRONTEND, CATALOG, RATINGS):
            _sh("ip", "-n", name, "addr", "add", f"{addr}/32", "dev", "hm-l40")
        for addr6 in (V6_CLIENT, V6_SERVER):
            _sh("ip", "-n", name, "addr", "add", f"{addr6}/128", "dev", "hm-l40", "nodad")
        yield name
    finally:
        if Path("/run/netns", name).exists():
            _sh("ip", "netns", "del", name)


def _load(pins: tuple[Path, Path], **kwargs: Any) -> L4Policy:
    return L4Policy.load(pins[0], pins[1], **kwargs)


@pytest.fixture
def client(netns: str, cgroup: Path) -> Iterator[subprocess.Popen[str]]:
    """Catalog serving 8080 and 9090 in ``cgroup``; a client process in the same netns."""
    argv = ["ip", "netns", "exec", netns, sys.executable, str(PEER)]
    procs: list[subprocess.Popen[str]] = []
    try:
        server = subprocess.Popen(_in_cgroup(cgroup, [*argv, "serve", "8080", "9090"]),
                                  stdout=subprocess.PIPE, text=True)
        procs.append(server)
        peer = subprocess.Popen([*argv, "client"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(peer)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield peer
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def env(
    pins: tuple[Path, Path], netns: str, cgroup: Path, client: subprocess.Popen[str]
) -> Iterator[Env]:
    """The catalog's cgroup enforced by a freshly loaded L4Policy; no policy yet."""
    state = Env(netns, cgroup, _load(pins, event_interval_ns=10_000_000_000), client)
    try:
        state.l4.attach(cgroup)
        yield state
    finally:
        state.l4.detach()
        state.l4.close()


def test_allowed_source_connects_and_a_denied_syn_times_out_with_the_policy_named(
    env: Env,
) -> None:
    env.enforce(ALLOW_FRONTEND)
    assert env.connect("a", FRONTEND) == "ok"
    assert env.ask(f"send a hello {SHORT}") == "hello"
    assert env.connect("b", RATINGS) == "timeout"
    drops = env.events()
    assert len(drops) == 1
    drop = drops[0]
    assert (drop.src_ip, drop.dst_ip, drop.dst_port) == (RATINGS, CATALOG, 8080)
    assert (env.policy_of(drop), drop.reason, drop.default_deny) == (
        "shop/catalog-allow", "new", True)
    stats = env.l4.stats()
    assert stats.allowed_new == 1 and stats.dropped_new >= 1 and stats.events == 1


def test_default_deny_once_an_allow_selects_the_pod(env: Env) -> None:
    assert env.connect("a", RATINGS, 9090) == "ok"  # no policy: open
    env.enforce(ALLOW_FRONTEND)
    assert env.connect("b", RATINGS, 9090) == "timeout"
    assert env.connect("c", FRONTEND, 9090) == "timeout"  # allowed only on 8080
    assert env.connect("d", FRONTEND, 8080) == "ok"


def test_ipv6_into_an_enforced_pod_is_closed_except_from_loopback(env: Env) -> None:
    """Identities are IPv4: an IPv6 path (e.g. the veth's link-local address) would bypass
    every policy, so it is dropped even with no policy at all; ::1 stays open."""
    assert env.ask(f"connect a {V6_CLIENT} {V6_SERVER} 8080 {SHORT}") == "timeout"
    assert env.ask(f"connect b ::1 ::1 8080 {SHORT}") == "ok"
    assert env.connect("c", RATINGS) == "ok"
    assert env.l4.stats().dropped_ipv6 >= 1


def test_deny_beats_allow(env: Env) -> None:
    env.enforce(ALLOW_FRONTEND, DENY_FRONTEND)
    assert env.connect("a", FRONTEND) == "timeout"
    assert [env.policy_of(d) for d in env.events()] == ["shop/no-frontend"]
    assert not env.events()[0].default_deny


def test_drop_events_are_rate_limited_per_flow(env: Env) -> None:
    """A connect retransmits its SYN after ~1 s: two drops, one event (interval 10 s)."""
    env.enforce(ALLOW_FRONTEND)
    assert env.connect("a", RATINGS, timeout="1.6") == "timeout"
    stats = env.l4.stats()
    assert stats.dropped_new == 2 and stats.events == 1
    assert len(env.events()) == 1


def test_a_policy_change_cuts_an_established_connection(env: Env) -> None:
    """After the epoch bump the flow's next segment is re-judged and dropped: the echo never
    comes (the client's data is retransmitted, unanswered); allowing again lets it through."""
    env.enforce(ALLOW_FRONTEND)
    assert env.connect("a", FRONTEND) == "ok"
    assert env.ask(f"send a one {SHORT}") == "one"
    epoch = env.l4.epoch()
    assert env.enforce(ALLOW_FRONTEND, DENY_FRONTEND)
    assert env.l4.epoch() == epoch + 1
    assert env.ask(f"send a two {SHORT}") == "timeout"
    drops = env.events()
    assert [(d.reason, env.policy_of(d)) for d in drops] == [("established", "shop/no-frontend")]
    assert env.l4.stats().dropped_established >= 1
    env.enforce(ALLOW_FRONTEND)  # the retransmission of "two" is admitted again
    assert env.ask("send a three 3") in ("two", "two\nthree")


def test_a_connection_accepted_before_the_attach_is_judged_after_a_change(env: Env) -> None:
    """No cached verdict (it predates the attachment, as an LRU-evicted one would): its next
    segment is judged by the policy like a SYN, not waved through as a reply."""
    env.l4.detach()
    assert env.connect("a", RATINGS) == "ok"
    assert env.connect("b", FRONTEND) == "ok"
    env.l4.attach(env.cgroup)
    env.enforce(ALLOW_FRONTEND)
    assert env.ask(f"send b allowed {SHORT}") == "allowed"
    assert env.ask(f"send a denied {SHORT}") == "timeout"
    assert [(d.src_ip, d.reason) for d in env.events()] == [(RATINGS, "established")]


def test_replies_to_the_pod_s_own_connects_pass_under_default_deny(
    env: Env, netns: str, cgroup: Path
) -> None:
    """The enforced pod dials out (a server outside its cgroup): hm_l4_egress marked the
    socket when its SYN left, so the SYN-ACK and every reply pass without any rule."""
    argv = ["ip", "netns", "exec", netns, sys.executable, str(PEER)]
    outside = subprocess.Popen([*argv, "serve", "7070"], stdout=subprocess.PIPE, text=True)
    inside = subprocess.Popen(_in_cgroup(cgroup, [*argv, "client"]), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert outside.stdout is not None and outside.stdout.readline().strip() == "ready"
        pod = Env(netns, cgroup, env.l4, inside)
        env.enforce(ALLOW_FRONTEND)  # default-deny into the catalog
        assert pod.ask(f"connect out {CATALOG} {FRONTEND} 7070 {SHORT}") == "ok"
        assert pod.ask(f"send out reply {SHORT}") == "reply"
        env.enforce(ALLOW_FRONTEND, DENY_FRONTEND)  # a change: still a reply, still passes
        assert pod.ask(f"send out again {SHORT}") == "again"
        assert env.events() == []
    finally:
        for proc in (outside, inside):
            proc.kill()
            proc.wait()


def test_reload_keeps_enforcing_without_a_gap(env: Env, pins: tuple[Path, Path]) -> None:
    env.enforce(ALLOW_FRONTEND)
    assert env.connect("a", FRONTEND) == "ok"
    storm = subprocess.Popen(
        ["ip", "netns", "exec", env.netns, sys.executable, str(PEER), "client"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert storm.stdin is not None and storm.stdout is not None
        storm.stdin.write(f"storm {RATINGS} {CATALOG} 8080 0.05 1.5\n")
        storm.stdin.flush()
        old_id = env.l4.program_id()
        for _ in range(3):  # an agent restart: close, load, the same links get the new program
            env.l4.close()
            env.l4 = _load(pins)
        connected, failed = map(int, storm.stdout.readline().split())
    finally:
        storm.kill()
        storm.wait()
    assert connected == 0 and failed > 5
    assert env.l4.program_id() != old_id
    assert env.l4.attached() == [os.stat(env.cgroup).st_ino]
    assert env.ask(f"send a still {SHORT}") == "still"
    assert env.enforce(ALLOW_FRONTEND) is False  # rules survived in the pinned maps


def test_per_packet_cost(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """Kernel run time per packet (stats on while measuring): established connections under
    request/response, and short connections (SYN judged, verdict cached, then data and FIN)."""
    env.enforce(ALLOW_FRONTEND)
    assert env.connect("a", FRONTEND) == "ok"
    stats_fd = _libbpf.enable_run_stats()
    try:
        start, egress0 = env.l4.program_stats(), _libbpf.prog_info(env.l4.egress_program.fd)
        assert env.ask("rr a 3000") == "done"
        mid = env.l4.program_stats()
        connected, _ = map(int, env.ask(f"storm {FRONTEND} {CATALOG} 8080 1 0.5").split())
        end, egress1 = env.l4.program_stats(), _libbpf.prog_info(env.l4.egress_program.fd)
    finally:
        os.close(stats_fd)
    rr_runs, conn_runs = mid.run_cnt - start.run_cnt, end.run_cnt - mid.run_cnt
    rr_ns = (mid.run_time_ns - start.run_time_ns) / rr_runs
    conn_ns = (end.run_time_ns - mid.run_time_ns) / conn_runs
    egress_runs = egress1.run_cnt - egress0.run_cnt
    egress_ns = (egress1.run_time_ns - egress0.run_time_ns) / max(egress_runs, 1)
    with capsys.disabled():
        print(f"\nl4policy: request/response {rr_runs} packets, {rr_ns:.0f} ns/packet; "
              f"{connected} short connections, {conn_runs} packets, {conn_ns:.0f} ns/packet; "
              f"egress {egress_runs} packets, {egress_ns:.0f} ns/packet")
    assert rr_runs >= 3000 and connected > 0 and conn_runs >= 2 * connected
    assert rr_ns < 20_000 and conn_ns < 20_000


def test_the_datapath_enforces_kernel_pods_and_reports_named_drops(
    pins: tuple[Path, Path], netns: str, cgroup: Path, client: subprocess.Popen[str]
) -> None:
    dp = L4PolicyDatapath("n1", pin_dir=pins[0], shared=pins[1])
    probe = Env(netns, cgroup, None, client)  # type: ignore[arg-type]  # only ask/connect
    try:
        dp.sync(probe.state(ALLOW_FRONTEND))
        assert dp.status().detail["pods"] == ["shop/catalog-0"]
        assert probe.connect("a", RATINGS) == "timeout"
        assert probe.connect("b", FRONTEND) == "ok"
        events = dp.drain_events()
        assert [(e.kind, e.verdict, e.policy, e.src_ip, e.dst_port) for e in events] == [
            ("drop", "DROPPED", "shop/catalog-allow", RATINGS, 8080)]
        assert abs(events[0].time_ns - time.time_ns()) < 5_000_000_000
        assert dp.drain_events() == []
        moved = replace(probe.state(ALLOW_FRONTEND), pods=tuple(
            replace(p, placement="sidecar") for p in probe.state().pods))
        dp.sync(moved)  # no kernel pod left: detached, open again
        status = dp.status()
        assert status.detail["pods"] == [] and status.programs[0].attach.startswith(
            "cgroup_skb/ingress on 0 ")
        assert probe.connect("c", RATINGS) == "ok"
        json.dumps(status.to_json())
    finally:
        dp.close()


def test_the_epoch_is_shared_with_sockmap_whichever_loads_first(pins: tuple[Path, Path]) -> None:
    sockmap_pins = bpffs.pin_dir(f"{TAG}-sm-{next(_serial)}")
    sm = SockMap.load(sockmap_pins, pins[1])
    try:
        l4 = _load(pins)
        try:
            start = sm.epoch()
            assert l4.epoch() == start
            assert l4.bump_epoch() == start + 1 == sm.epoch()
        finally:
            l4.close()
    finally:
        sm.close()
        SockMap.remove(sockmap_pins)


def test_the_datapath_enforces_node_pods_too(
    pins: tuple[Path, Path], netns: str, cgroup: Path, client: subprocess.Popen[str]
) -> None:
    """Defence in depth for the node placement (docs/node.md §4): plaintext from a pod
    without a proxy meets the node pod's rules in the kernel, by the caller's identity."""
    dp = L4PolicyDatapath("n1", pin_dir=pins[0], shared=pins[1])
    probe = Env(netns, cgroup, None, client)  # type: ignore[arg-type]  # only ask/connect
    try:
        state = probe.state(ALLOW_FRONTEND)
        dp.sync(replace(state, pods=tuple(replace(p, placement="node") for p in state.pods)))
        assert dp.status().detail["pods"] == ["shop/catalog-0"]
        assert probe.connect("a", RATINGS) == "timeout"
        assert probe.connect("b", FRONTEND) == "ok"
    finally:
        dp.close()
