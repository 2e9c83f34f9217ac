"""Node proxies in two node namespaces: tunnels, identity, policy, refusal, handover, isolation.

Run only inside a sandbox: ``tools/sandbox node .venv/bin/pytest -q tests/integration/nodeproxy``.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
from nodenet import CLIENT_ID, CLIENT_IP, FABRIC, N1, OTHER_IP, NodeNet

from hybridmesh.identity.ca import MeshCA
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.tls import client_context
from hybridmesh.identity.workload import Svid, make_csr, new_key
from hybridmesh.lab.netns import socket_in

pytestmark = pytest.mark.privileged

OTHER_ID = "spiffe://cluster.local/ns/default/sa/other"


def policy(name: str, action: str, principals: list[str]) -> dict[str, Any]:
    return {"apiVersion": "hybridmesh.io/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "action": action,
                     "rules": [{"from": [{"source": {"principals": principals}}]}]}}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeNet]:
    if os.geteuid() != 0:
        pytest.fail("privileged tests need root (network namespaces, bpffs)")
    bed = NodeNet(tmp_path_factory.mktemp("nodenet"))
    # the noisy-neighbour test wants a visible limit; the defaults are far above 2 cores' reach
    bed.proxy_args = {"n1": ["--max-connections", "128"]}
    try:
        bed.up()
        yield bed
    finally:
        bed.down()


def refused(metrics: str, reason: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("nodeproxy_refused_total{") and f'reason="{reason}"' in line)


def test_cross_node_through_the_tunnel_as_the_source_identity(net: NodeNet) -> None:
    report = net.client("echo", *net.client_args("client-0", CLIENT_IP, 3, hold=0.3))
    assert report["opened"] == 3 and report["failures"] == 0, report
    metrics = net.metrics("n2")
    assert f'reporter="destination",source_principal="{CLIENT_ID}"' in metrics
    dump = json.loads(net.admin("n1", "/config_dump"))
    assert dump["tunnels"]["client"] >= 1
    assert set(dump["identities"]) == {"default/client-0", "default/other-0"}  # its pods only
    assert "PRIVATE KEY" not in json.dumps(dump) + metrics


def test_policy_denying_the_identity_closes_the_stream(net: NodeNet) -> None:
    net.publish([policy("deny-client", "DENY", [CLIENT_ID])])
    try:
        time.sleep(0.5)
        before = refused(net.metrics("n2"), "policy")
        denied = net.client("echo", *net.client_args("client-0", CLIENT_IP, 2))
        allowed = net.client("echo", *net.client_args("other-0", OTHER_IP, 1))
        assert denied["opened"] == 0 and denied["refused"] == 2, denied
        assert allowed["opened"] == 1, allowed
        assert refused(net.metrics("n2"), "policy") == before + 2
    finally:
        net.publish([])
        time.sleep(0.5)


def test_forged_source_ip_gets_neither_identity_nor_policy(net: NodeNet) -> None:
    net.publish([policy("only-client", "ALLOW", [CLIENT_ID])])
    try:
        time.sleep(0.5)
        forged = net.client("echo", *net.client_args("other-0", CLIENT_IP, 1))  # other-0's
        real = net.client("echo", *net.client_args("client-0", CLIENT_IP, 1))  # cgroup
        assert forged["opened"] == 0 and real["opened"] == 1, (forged, real)
        assert f'source_principal="{OTHER_ID}"' in net.metrics("n2")
    finally:
        net.publish([])
        time.sleep(0.5)


def test_unresolvable_source_is_refused(net: NodeNet) -> None:
    before = refused(net.metrics("n1"), "unresolved-source")
    report = net.client("echo", *net.client_args("client-0", CLIENT_IP, 2, no_record=True))
    assert report["opened"] == 0
    assert refused(net.metrics("n1"), "unresolved-source") == before + 2


def test_wrong_trust_domain_certificate_is_refused(net: NodeNet) -> None:
    rogue_ca = MeshCA.create_root("evil.local")
    key = new_key()
    identity = SpiffeId.parse("spiffe://evil.local/ns/default/sa/client")
    svid = Svid(rogue_ca.sign(make_csr(key, identity), identity, _ttl()), key, rogue_ca.bundle)
    ctx = client_context(svid)
    ctx.set_alpn_protocols(["h2"])
    ctx.verify_mode = ssl.CERT_NONE  # the rogue does not care who answers
    raw = socket_in(N1, 2, 1)  # AF_INET, SOCK_STREAM in n1
    raw.settimeout(5)
    raw.connect((FABRIC["n2"], 15008))
    try:  # TLS 1.3: the server rejects the client certificate after the client's Finished
        tls = ctx.wrap_socket(raw, server_hostname=None)
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        rejected = tls.recv(1) == b""
    except (ssl.SSLError, OSError):
        rejected = True
    raw.close()
    assert rejected
    assert refused(net.metrics("n2"), "tunnel-handshake") >= 1


def _ttl() -> Any:
    from datetime import timedelta

    return timedelta(minutes=5)


def test_takeover_keeps_100_long_lived_connections(net: NodeNet) -> None:
    clients = net.python("long", N1, str(_helper()), "echo", "--pin", str(net.pin),
                         *net.client_args("client-0", CLIENT_IP, 100, hold=6, interval=0.1))
    _wait_for(lambda: '"opened"' in net.log("long"), 20)
    assert '"opened": 100' in net.log("long"), net.log("long")
    old = net.procs["proxy-n1"]
    old_pid = json.loads(net.admin("n1", "/live"))["pid"]
    net.start_proxy("n1", "proxy-n1-new", "--takeover", str(net.tmp / "n1.handoff"))
    _wait_for(lambda: json.loads(net.admin("n1", "/live") or "{}").get("pid") not in
              (None, old_pid), 20, lambda: net.log("proxy-n1-new") + net.log("proxy-n1"))
    # new connections are served by the successor while the old one drains the 100
    fresh = net.client("echo", *net.client_args("client-0", CLIENT_IP, 5))
    assert fresh["opened"] == 5, fresh
    assert old.poll() is None, "the old proxy must keep relaying its connections"
    clients.wait(30)
    report = json.loads(net.log("long").strip().splitlines()[-1])
    assert report["opened"] == 100 and report["failures"] == 0 and report["rounds"] >= 2000, \
        report
    assert old.wait(30) == 0  # drained and exited by itself
    net.procs["proxy-n1"] = net.procs.pop("proxy-n1-new")
    net.wait_ready("n1")


def test_noisy_neighbour_is_limited_and_the_quiet_pod_is_not_starved(net: NodeNet) -> None:
    """Behaviour only: the storm hits its per-workload limit while the quiet pod keeps being
    served without a failure. The p99 ratio (issue: <= 2x) is a measurement, printed here and
    reported from a quiet machine (docs/node.md); asserting it would make the suite a timing
    test of whatever else shares the two cores."""
    # The storm client runs at nice 10: on 2 shared cores its own Python loop would otherwise
    # take CPU from the quiet *client* process, which measures the scheduler, not the proxy's
    # sharing (in a cluster the noisy pod's CPU is its own cgroup's). Unniced, 5 runs gave
    # ratios 0.96-1.97 (docs/node.md).
    quiet_args = net.client_args("client-0", CLIENT_IP, duration=4, interval=0.01, fresh=True)
    baseline = net.client("latency", *quiet_args)
    noisy = net.python("noisy", N1, str(_helper()), "storm", "--pin", str(net.pin),
                       *net.client_args("other-0", OTHER_IP, duration=6, nice=10))
    time.sleep(1.0)
    loaded = net.client("latency", *quiet_args)
    noisy.wait(30)
    storm = json.loads(net.log("noisy").strip().splitlines()[-1])
    ratio = loaded["p99"] / baseline["p99"]
    print(f"\nnoisy neighbour: baseline p50/p99 {baseline['p50']}/{baseline['p99']} ms, "
          f"under storm {loaded['p50']}/{loaded['p99']} ms (x{ratio:.2f}); storm {storm}")
    assert storm["refused"] > 0, storm  # the noisy pod hit its limit
    assert loaded["failures"] == 0 and baseline["failures"] == 0
    assert loaded["samples"] > 0, (baseline, loaded, storm)


def _helper() -> Any:
    from pathlib import Path

    return Path(__file__).with_name("npclient.py")


def _wait_for(check: Any, timeout: float, why: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ValueError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting: {why()[-3000:]}")


del signal
