"""tls-handshake's arithmetic and the server-side count it checks against (pure parts)."""

from __future__ import annotations

import pytest

from hybridmesh.bench.handshakes import HandshakeRunner, mutual_tls_connections
from hybridmesh.bench.scenarios import CONTENDERS, measures

_P = 'source_principal="spiffe://cluster.local/ns/a/sa/{}"'
METRICS = "\n".join([
    "# TYPE identity_connections_total counter",
    'identity_connections_total{reporter="destination",connection_security_policy="mutual_tls",'
    + _P.format("client") + "} 40",
    'identity_connections_total{reporter="destination",connection_security_policy="none",'
    'source_principal="unknown"} 7',
    'identity_connections_total{reporter="source",connection_security_policy="mutual_tls",'
    + _P.format("http") + "} 2",
    'identity_connections_refused_total{reporter="destination",reason="handshake"} 5',
    'request_total{connection_security_policy="mutual_tls"} 1000',
])  # fmt: skip


def test_only_admitted_mutual_tls_connections_count() -> None:
    assert mutual_tls_connections(METRICS) == 42
    assert mutual_tls_connections("") == 0


def test_handshakes_per_core_second_come_from_the_server_proxy_cpu() -> None:
    out: dict[str, object] = {"handshakes_per_s": 250.0, "failures": 0}
    usage = {"cpu_proxy_server_us_per_op": 2000.0}  # 2 ms of server-proxy CPU per handshake
    metrics = HandshakeRunner._metrics(out, usage, ops=600.0)
    assert metrics["handshakes_per_core_s"] == pytest.approx(500.0)
    assert metrics["handshakes_per_s"] == 250.0 and metrics["errors"] == 0.0
    idle = HandshakeRunner._metrics(out, {"cpu_proxy_server_us_per_op": 0.0}, ops=600.0)
    assert idle["handshakes_per_core_s"] == 0.0  # refused by the run's check, never infinite


@pytest.mark.parametrize(
    ("name", "measured"),
    [("none", False), ("sidecar", True), ("sidecar-plaintext", False), ("sidecar+ebpf", False),
     ("kernel", False), ("node", False), ("envoy-sidecar", False), ("envoy-sidecar-mtls", True)],
)  # fmt: skip
def test_which_contenders_have_an_mtls_listener_to_measure(name: str, measured: bool) -> None:
    assert measures("tls-handshake", CONTENDERS[name]) is measured
    assert measures("http-latency", CONTENDERS[name])
