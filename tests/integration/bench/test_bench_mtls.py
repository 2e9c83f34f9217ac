"""What the mTLS benchmark compares is what it says: plaintext sidecars (identity disabled)
really talk plaintext, Envoy with mTLS really talks TLS, and tls-handshake measures the
server proxy's mTLS listener."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridmesh import env as hm_env
from hybridmesh.bench.bed import TestBed
from hybridmesh.bench.handshakes import HandshakeRunner, mutual_tls_connections
from hybridmesh.bench.scenarios import CONTENDERS
from hybridmesh.bench.schedule import CellKey, Run
from hybridmesh.bench.topology import client_pod, server_pod
from hybridmesh.lab import cleanup

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

NAMES = ("none", "sidecar", "sidecar-plaintext", "envoy-sidecar", "envoy-sidecar-mtls")


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    cleanup.sweep()  # the bench needs the machine's lab to itself
    out: Path = tmp_path_factory.mktemp("bench-mtls")
    bed = TestBed([CONTENDERS[n] for n in NAMES], out)
    try:
        bed.up()
        yield bed
    finally:
        bed.down()


def _security_policies(bed: TestBed, contender: str) -> dict[str, int]:
    """The server sidecar's admitted connections by connection_security_policy."""
    text = bed.http_text(server_pod(contender, "http-latency"), 15020, "/metrics")
    out = {"mutual_tls": mutual_tls_connections(text), "none": 0}
    for line in text.splitlines():
        if line.startswith("identity_connections_total{") and (
            'connection_security_policy="none"' in line
        ):
            out["none"] += int(float(line.rsplit(" ", 1)[1]))
    return out


def _get(bed: TestBed, contender: str, url: str = "http://http/", times: int = 3) -> None:
    client = client_pod(contender, "same-node")
    for i in range(times):
        done = bed.run_tool(client, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                     url], f"curl-{contender}-{i}", 15)  # fmt: skip
        assert done.output.strip().endswith("200"), done.output


def _grown(bed: TestBed, client: str, url: str) -> dict[str, int]:
    """What sending 3 requests from ``client``'s pod to ``url`` adds to the connections the
    (identity-holding, PERMISSIVE) ``sidecar`` server admitted, by security policy."""
    before = _security_policies(bed, "sidecar")
    _get(bed, client, url)
    after = _security_policies(bed, "sidecar")
    return {k: after[k] - before[k] for k in after}


def test_identity_disabled_sidecars_talk_plaintext(bed: TestBed) -> None:
    meshed = _grown(bed, "sidecar", "http://http/")
    assert meshed["mutual_tls"] >= 1 and meshed["none"] == 0, meshed  # the control case
    plain = _grown(bed, "sidecar-plaintext", "http://http.bench-sidecar/")
    assert plain["none"] >= 1 and plain["mutual_tls"] == 0, plain  # PERMISSIVE let it in
    pods = hm_env.STATE_DIR / "pods"
    assert (pods / "bench-sidecar_client-same-0" / "token").exists()
    assert not (pods / "bench-sidecar-plaintext_client-same-0").exists()  # no token at all
    text = bed.http_text(server_pod("sidecar-plaintext", "http-latency"), 15020, "/metrics")
    assert mutual_tls_connections(text) == 0


def test_both_envoy_contenders_keep_their_envoys(bed: TestBed) -> None:
    """Injecting the second Envoy namespace must not stop the first one's Envoys."""
    for contender in ("envoy-sidecar", "envoy-sidecar-mtls"):
        for role in (client_pod(contender, "same-node"), server_pod(contender, "http-latency")):
            envoy = bed.envoy(role)
            assert envoy is not None and envoy.process is not None, role.key
            assert envoy.process.poll() is None, role.key
            assert (envoy.tls is not None) is (contender == "envoy-sidecar-mtls")


def test_plaintext_envoys_do_no_tls(bed: TestBed) -> None:
    server = bed.envoy(server_pod("envoy-sidecar", "http-latency"))
    assert server is not None
    _get(bed, "envoy-sidecar")
    assert server.inbound_handshakes() == 0  # the control case: the counter can stay at 0


def test_envoy_mtls_sidecars_really_talk_tls(bed: TestBed) -> None:
    server = bed.envoy(server_pod("envoy-sidecar-mtls", "http-latency"))
    client = bed.envoy(client_pod("envoy-sidecar-mtls", "same-node"))
    assert server is not None and client is not None
    before = server.inbound_handshakes()
    _get(bed, "envoy-sidecar-mtls")
    assert server.inbound_handshakes() > before  # the inbound listener terminated TLS
    upstream = client.counters(r"outbound\|80\|\|http.*ssl\.handshake")
    assert sum(upstream.values()) >= 1, upstream  # and the client Envoy originated it
    plain = server.counters(r"inbound_http.*downstream_cx_total")
    assert plain, "the inbound HTTP chain saw no connection"


@pytest.mark.parametrize("contender", ["sidecar", "envoy-sidecar-mtls"])
def test_tls_handshake_measures_the_server_proxy(bed: TestBed, contender: str) -> None:
    run = Run(CellKey("tls-handshake", "same-node", None), contender, 0, 0, 0.2, 1.0)
    sample = HandshakeRunner(bed, procs=1).measure(run)
    assert sample.metrics["handshakes_per_s"] > 10
    assert sample.metrics["handshakes_per_core_s"] > 0
    assert sample.metrics["errors"] == 0
    assert sample.checks["server_handshake_share"] >= 0.95
