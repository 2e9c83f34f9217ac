"""Envoy's bootstrap for a lab pod: Istio's listener shape, built from the lab status."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hybridmesh.bench.envoy_config import (
    ADMIN_PORT,
    INBOUND_PORT,
    OUTBOUND_PORT,
    pod_from_status,
    render_bootstrap,
    services_from_status,
)
from hybridmesh.bench.envoy_sidecar import envoy_binary

NS = "bench-envoy-sidecar"
STATUS: dict[str, Any] = {
    "pods": [
        {"name": "http-0", "namespace": NS, "ip": "10.244.1.5",
         "ports": [{"name": "http", "containerPort": 8080}]},
        {"name": "tcp-0", "namespace": NS, "ip": "10.244.1.6",
         "ports": [{"name": "rr", "containerPort": 5001},
                   {"name": "stream", "containerPort": 5002}]},
    ],
    "services": [
        {"name": "http", "namespace": NS, "clusterIP": "10.96.0.12",
         "ports": [{"name": "http", "port": 80, "targetPort": 8080, "appProtocol": "http"}],
         "endpoints": [{"ip": "10.244.1.5"}]},
        {"name": "tcp", "namespace": NS, "clusterIP": "10.96.0.13",
         "ports": [{"name": "rr", "port": 5001, "targetPort": 5001, "appProtocol": "tcp"},
                   {"name": "stream", "port": 5002, "targetPort": 5002, "appProtocol": None}],
         "endpoints": [{"ip": "10.244.1.6"}]},
        {"name": "other", "namespace": "elsewhere", "clusterIP": "10.96.0.99",
         "ports": [{"name": "http", "port": 80, "targetPort": 8080, "appProtocol": "http"}],
         "endpoints": [{"ip": "10.244.2.9"}]},
        {"name": "empty", "namespace": NS, "clusterIP": "10.96.0.14",
         "ports": [{"name": "http", "port": 80, "targetPort": 8080, "appProtocol": "http"}],
         "endpoints": []},
    ],
}  # fmt: skip


def _bootstrap(pod: int = 0, mark: int | None = None) -> dict[str, Any]:
    services = services_from_status(STATUS, NS)
    return render_bootstrap(pod_from_status(STATUS["pods"][pod], STATUS), services, mark=mark)


def _listener(boot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(x for x in boot["static_resources"]["listeners"] if x["name"] == name)


def _cluster(boot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in boot["static_resources"]["clusters"] if c["name"] == name)


def test_services_are_scoped_to_the_pods_namespace_with_l7_from_app_protocol() -> None:
    services = services_from_status(STATUS, NS)
    assert [(s.name, s.port, s.l7) for s in services] == [
        ("empty", 80, True), ("http", 80, True), ("tcp", 5001, False), ("tcp", 5002, False),
    ]  # fmt: skip
    assert services[1].endpoints == ("10.244.1.5",)
    assert services[1].cluster == f"outbound|80||http.{NS}.svc.cluster.local"


def test_outbound_listener_matches_cluster_ip_and_port_and_restores_the_original_dst() -> None:
    out = _listener(_bootstrap(), "virtualOutbound")
    assert out["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": OUTBOUND_PORT}
    assert out["use_original_dst"] is True
    assert out["listener_filters"][0]["name"] == "envoy.filters.listener.original_dst"
    found = [c["filter_chain_match"] for c in out["filter_chains"]]
    matches = [(m["prefix_ranges"][0]["address_prefix"], m["destination_port"]) for m in found]
    # a service without endpoints gets no chain (its traffic passes through, as Istio does)
    assert matches == [("10.96.0.12", 80), ("10.96.0.13", 5001), ("10.96.0.13", 5002)]
    http, rr = out["filter_chains"][0]["filters"][0], out["filter_chains"][1]["filters"][0]
    assert http["name"] == "envoy.filters.network.http_connection_manager"
    route = http["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert route["cluster"] == f"outbound|80||http.{NS}.svc.cluster.local"
    assert rr["name"] == "envoy.filters.network.tcp_proxy"
    default = out["default_filter_chain"]["filters"][0]["typed_config"]
    assert default["cluster"] == "PassthroughCluster"


def test_service_clusters_balance_over_the_endpoints_target_port() -> None:
    boot = _bootstrap()
    cluster = _cluster(boot, f"outbound|80||http.{NS}.svc.cluster.local")
    assert cluster["type"] == "STATIC" and cluster["lb_policy"] == "LEAST_REQUEST"
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "10.244.1.5", "port_value": 8080}
    assert _cluster(boot, "PassthroughCluster")["type"] == "ORIGINAL_DST"
    assert "load_assignment" not in _cluster(boot, "PassthroughCluster")


def test_inbound_listener_forwards_each_pod_port_to_the_pod_ip() -> None:
    boot = _bootstrap(pod=1)  # tcp-0: two opaque ports
    inbound = _listener(boot, "virtualInbound")
    assert inbound["address"]["socket_address"]["port_value"] == INBOUND_PORT
    ports = [c["filter_chain_match"]["destination_port"] for c in inbound["filter_chains"]]
    assert ports == [5001, 5002]
    assert {c["filters"][0]["name"] for c in inbound["filter_chains"]} == {
        "envoy.filters.network.tcp_proxy"
    }
    address = _cluster(boot, "inbound|5001||")["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert address["endpoint"]["address"]["socket_address"] == {
        "address": "10.244.1.6",
        "port_value": 5001,
    }


def test_inbound_http_port_gets_the_http_connection_manager() -> None:
    inbound = _listener(_bootstrap(pod=0), "virtualInbound")
    assert (
        inbound["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"] == "inbound_http"
    )


def test_admin_listens_on_loopback_only() -> None:
    admin = _bootstrap()["admin"]["address"]["socket_address"]
    assert admin == {"address": "127.0.0.1", "port_value": ADMIN_PORT}


def test_so_mark_only_when_envoy_cannot_run_as_its_own_uid() -> None:
    plain = _bootstrap()
    assert all("upstream_bind_config" not in c for c in plain["static_resources"]["clusters"])
    marked = _bootstrap(mark=0x539)
    for cluster in marked["static_resources"]["clusters"]:
        option = cluster["upstream_bind_config"]["socket_options"][0]
        assert (option["level"], option["name"], option["int_value"]) == (1, 36, 0x539)


_H2 = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_GRPC_POD = {"name": "grpc-0", "namespace": NS, "ip": "10.244.1.7",
             "ports": [{"name": "grpc", "containerPort": 50051}]}  # fmt: skip
_GRPC_SVC = {"name": "grpc", "namespace": NS, "clusterIP": "10.96.0.15",
             "ports": [{"name": "grpc", "port": 50051, "targetPort": 50051, "appProtocol": "grpc"}],
             "endpoints": [{"ip": "10.244.1.7"}]}  # fmt: skip
STATUS_H2: dict[str, Any] = {
    "pods": [*STATUS["pods"], _GRPC_POD],
    "services": [*STATUS["services"], _GRPC_SVC],
}


def _h2_bootstrap(pod: int) -> dict[str, Any]:
    services = services_from_status(STATUS_H2, NS)
    return render_bootstrap(pod_from_status(STATUS_H2["pods"][pod], STATUS_H2), services)


def test_grpc_upstreams_speak_http2_on_both_sides_and_http1_ones_do_not() -> None:
    client, server = _h2_bootstrap(0), _h2_bootstrap(2)
    out = _cluster(client, "outbound|50051||grpc.bench-envoy-sidecar.svc.cluster.local")
    options = out["typed_extension_protocol_options"][_H2]
    assert options["explicit_http_config"] == {"http2_protocol_options": {}}
    assert _H2 in _cluster(server, "inbound|50051||")["typed_extension_protocol_options"]
    http = _cluster(client, "outbound|80||http.bench-envoy-sidecar.svc.cluster.local")
    assert "typed_extension_protocol_options" not in http
    assert "typed_extension_protocol_options" not in _cluster(_h2_bootstrap(0), "inbound|8080||")


def test_envoy_accepts_the_http2_upstream_options(tmp_path: Path) -> None:
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(_h2_bootstrap(0)))
    argv = [str(envoy_binary()), "--mode", "validate", "-c", str(config), "--disable-hot-restart"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.parametrize(("pod", "mark"), [(0, None), (1, None), (0, 0x539)])
def test_envoy_itself_accepts_the_bootstrap(tmp_path: Path, pod: int, mark: int | None) -> None:
    """``envoy --mode validate``: the real parser, no ports bound (needs the bench extra)."""
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(_bootstrap(pod=pod, mark=mark)))
    argv = [str(envoy_binary()), "--mode", "validate", "-c", str(config), "--disable-hot-restart"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "OK" in done.stdout + done.stderr
