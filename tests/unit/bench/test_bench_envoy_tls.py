"""envoy-sidecar-mtls: Istio-shaped mTLS in the Envoy bootstrap, and the bench CA's SVIDs."""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from hybridmesh.bench.envoy_certs import BenchCA, write_pod_tls
from hybridmesh.bench.envoy_config import pod_from_status, render_bootstrap, services_from_status
from hybridmesh.bench.envoy_sidecar import envoy_binary
from hybridmesh.bench.envoy_tls import EnvoyTls, spiffe_id, upstream_transport

NS = "bench-envoy-sidecar-mtls"
STATUS: dict[str, Any] = {
    "pods": [
        {"name": "http-0", "namespace": NS, "ip": "10.244.1.5", "serviceAccount": "http",
         "ports": [{"name": "http", "containerPort": 8080}]},
        {"name": "client-same-0", "namespace": NS, "ip": "10.244.1.7",
         "serviceAccount": "client", "ports": []},
    ],
    "services": [
        {"name": "http", "namespace": NS, "clusterIP": "10.96.0.12",
         "ports": [{"name": "http", "port": 80, "targetPort": 8080, "appProtocol": "http"}],
         "endpoints": [{"ip": "10.244.1.5", "serviceAccount": "http"}]},
        {"name": "tcp", "namespace": NS, "clusterIP": "10.96.0.13",
         "ports": [{"name": "rr", "port": 5001, "targetPort": 5001, "appProtocol": "tcp"}],
         "endpoints": [{"ip": "10.244.1.6", "serviceAccount": "tcp"}]},
    ],
}  # fmt: skip
TLS = EnvoyTls("/x/cert.pem", "/x/key.pem", "/x/bundle.pem")


def _boot(pod: int, tls: EnvoyTls | None = TLS) -> dict[str, Any]:
    services = services_from_status(STATUS, NS)
    return render_bootstrap(pod_from_status(STATUS["pods"][pod], STATUS), services, tls=tls)


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(x for x in items if x["name"] == name)


def _tls_context(cluster: dict[str, Any]) -> dict[str, Any]:
    socket = cluster["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    context: dict[str, Any] = socket["typed_config"]
    return context


def test_outbound_clusters_present_the_svid_and_pin_the_server_identity() -> None:
    clusters = _boot(1)["static_resources"]["clusters"]
    http = _tls_context(_named(clusters, f"outbound|80||http.{NS}.svc.cluster.local"))
    common = http["common_tls_context"]
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"filename": "/x/cert.pem"},
            "private_key": {"filename": "/x/key.pem"},
        }
    ]
    assert common["validation_context"]["trusted_ca"] == {"filename": "/x/bundle.pem"}
    assert common["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": f"spiffe://cluster.local/ns/{NS}/sa/http"}}
    ]
    assert common["alpn_protocols"] == ["http/1.1"]
    assert common["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"
    assert http["sni"] == f"outbound_.80_._.http.{NS}.svc.cluster.local"
    tcp = _tls_context(_named(clusters, f"outbound|5001||tcp.{NS}.svc.cluster.local"))
    assert "alpn_protocols" not in tcp["common_tls_context"]
    assert "transport_socket" not in _named(clusters, "PassthroughCluster")
    server = _boot(0)["static_resources"]["clusters"]
    assert "transport_socket" not in _named(server, "inbound|8080||")  # to the app: plaintext


def test_inbound_requires_client_certificates_and_keeps_plaintext_when_permissive() -> None:
    inbound = _named(_boot(0)["static_resources"]["listeners"], "virtualInbound")
    names = [f["name"] for f in inbound["listener_filters"]]
    assert names == ["envoy.filters.listener.original_dst", "envoy.filters.listener.tls_inspector"]
    chains = inbound["filter_chains"]
    assert [c["filter_chain_match"] for c in chains] == [
        {"destination_port": 8080, "transport_protocol": "tls"},
        {"destination_port": 8080, "transport_protocol": "raw_buffer"},
    ]
    context = chains[0]["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is True
    sans = context["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    assert sans == [{"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}]
    assert "transport_socket" not in chains[1]
    hcm = chains[0]["filters"][0]["typed_config"]
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"


def test_strict_has_no_plaintext_chain() -> None:
    strict = EnvoyTls("/x/c", "/x/k", "/x/b", permissive=False)
    inbound = _named(_boot(0, strict)["static_resources"]["listeners"], "virtualInbound")
    assert [c["filter_chain_match"]["transport_protocol"] for c in inbound["filter_chains"]] == [
        "tls"
    ]


def test_without_tls_nothing_changes() -> None:
    boot = _boot(0, None)
    inbound = _named(boot["static_resources"]["listeners"], "virtualInbound")
    assert len(inbound["listener_filters"]) == 1
    assert all("transport_socket" not in c for c in boot["static_resources"]["clusters"])
    assert all(
        "transport_protocol" not in c["filter_chain_match"] for c in inbound["filter_chains"]
    )


def test_upstream_without_identities_is_refused() -> None:
    with pytest.raises(ValueError, match="SPIFFE IDs"):
        upstream_transport(TLS, [], ("h2",), "sni")


def test_bench_ca_issues_spiffe_svids_that_verify(tmp_path: Path) -> None:
    ca = BenchCA()
    sid = spiffe_id("cluster.local", NS, "http")
    tls = write_pod_tls(ca, tmp_path / "pod", sid, owner_uid=None, permissive=True)
    cert = x509.load_pem_x509_certificate(Path(tls.cert_chain).read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [sid]
    assert (Path(tls.private_key).stat().st_mode & 0o777) == 0o600
    cert.verify_directly_issued_by(ca.root)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tls.cert_chain, tls.private_key)  # the key matches the certificate
    other = BenchCA()
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(other.root)


def test_envoy_accepts_the_mtls_bootstrap(tmp_path: Path) -> None:
    ca = BenchCA()
    tls = write_pod_tls(ca, tmp_path / "pod", spiffe_id("cluster.local", NS, "client"),
                        owner_uid=None, permissive=True)  # fmt: skip
    services = services_from_status(STATUS, NS)
    for pod in STATUS["pods"]:
        config = tmp_path / f"{pod['name']}.json"
        config.write_text(
            json.dumps(render_bootstrap(pod_from_status(pod, STATUS), services, tls=tls))
        )
        argv = [
            str(envoy_binary()),
            "--mode",
            "validate",
            "-c",
            str(config),
            "--disable-hot-restart",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
