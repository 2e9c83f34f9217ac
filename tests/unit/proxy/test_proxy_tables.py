"""Pure parts of the engine: snapshot tables, error responses, config, metric merging, sockaddr."""

from __future__ import annotations

import socket
import struct

import pytest

from hybridmesh.proxy._sockopt import decode_sockaddr_in
from hybridmesh.proxy.admin import merge_expositions
from hybridmesh.proxy.config import ConfigError, ProxyConfig, parse_args, to_argv
from hybridmesh.proxy.discovery import SnapshotError, build_tables
from hybridmesh.proxy.errors import ProxyError, Reason, render
from hybridmesh.proxy.protocols.http1 import NEED_DATA, Response, ResponseReader
from hybridmesh.proxy.testing import endpoint, pod_snapshot, service
from hybridmesh.telemetry.proxy_metrics import Peer, ProxyMetrics

WEB = service("web", "10.96.0.10", [(80, 8080, "http"), (81, 9000, "tcp")],
              [endpoint("web-0", "10.244.1.5", namespace="shop"),
               endpoint("web-1", "10.244.2.7", namespace="shop")], namespace="shop")


def snapshot(**extra: object) -> dict[str, object]:
    snap = pod_snapshot("web-1", "10.244.2.7", [WEB], namespace="shop",
                        labels={"app": "web"})
    return {"version": 7, **snap, **extra}


def test_tables_index_vips_endpoints_and_the_pods_own_ports() -> None:
    t = build_tables(snapshot())
    assert t.version == 7
    sp = t.by_vip[("10.96.0.10", 80)]
    assert (sp.service, sp.fqdn, sp.target_port) == ("shop/web", "web.shop.svc.cluster.local",
                                                     8080)
    assert not sp.opaque and t.by_vip[("10.96.0.10", 81)].opaque
    assert t.peer_of("10.244.1.5") == Peer("web", "shop", "unknown")
    assert t.peer_of("192.0.2.1") == Peer.unknown()
    assert t.pod.peer == Peer("web", "shop", "unknown")
    assert {p: i.service_fqdn for p, i in t.inbound.items()} == {
        8080: "web.shop.svc.cluster.local", 9000: "web.shop.svc.cluster.local"}
    assert t.inbound[9000].app_protocol == "tcp"


def test_inbound_ports_come_from_selectors_not_readiness() -> None:
    other = pod_snapshot("api-0", "10.244.1.9", [WEB], namespace="shop", labels={"app": "api"})
    assert build_tables({"version": 1, **other}).inbound == {}


@pytest.mark.parametrize("broken", [{"pod": None}, {"services": [{"name": "x"}]},
                                    {"services": [{**WEB, "ports": [{"port": "eighty"}]}]}])
def test_malformed_snapshots_raise_a_typed_error(broken: dict[str, object]) -> None:
    with pytest.raises(SnapshotError, match="unusable snapshot"):
        build_tables(snapshot(**broken))


def test_config_dump_names_no_key_material_and_is_json_shaped() -> None:
    dump = build_tables(snapshot()).config_dump()
    assert dump["derived"]["vips"] == {"10.96.0.10:80": "shop/web", "10.96.0.10:81": "shop/web"}
    assert "key" not in repr(dump).lower().replace("keep", "")


@pytest.mark.parametrize("reason", list(Reason))
def test_error_responses_are_valid_http_with_header_and_body(reason: Reason) -> None:
    err = ProxyError(reason, "web.shop.svc.cluster.local:80", "detail\r\nX-Evil: 1")
    raw = render(err, "shop/client-0", keep_alive=True)
    reader = ResponseReader()
    reader.expect(b"GET")
    reader.receive_data(raw)
    head = reader.next_event()
    assert isinstance(head, Response) and head.status == reason.status
    fields = dict(head.headers)
    assert fields[b"hm-proxy-error"] == reason.value.encode()
    assert b"x-evil" not in fields  # the detail cannot inject a header
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert b"shop/client-0" in body and b"web.shop.svc.cluster.local:80" in body
    assert reader.next_event() is not NEED_DATA


def test_error_status_override_and_close() -> None:
    raw = render(ProxyError(Reason.BAD_REQUEST, "x", status=431), "p")
    assert raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close\r\n" in raw


def test_config_round_trips_through_argv_and_rejects_bad_values() -> None:
    config = parse_args(["--pod", "shop/web-0", "--control", "/run/x.sock", "--workers", "3",
                         "--detect-timeout-ms", "5", "--access-log", "--no-mark"])
    assert (config.namespace, config.pod, config.workers) == ("shop", "web-0", 3)
    assert config.detect_timeout_s == pytest.approx(0.005) and config.mark is None
    assert parse_args(to_argv(config)) == config
    with pytest.raises(ConfigError):
        ProxyConfig(namespace="shop", pod="", control_socket="x")
    with pytest.raises(SystemExit):
        parse_args(["--pod", "nonamespace", "--control", "x"])


def test_metric_merge_sums_counters_and_histograms_exactly() -> None:
    a, b = ProxyMetrics(), ProxyMetrics()
    src, dst = Peer("c", "shop", "unknown"), Peer("w", "shop", "unknown")
    for m, latency in ((a, 0.001), (b, 0.2), (b, 0.002)):
        m.request(reporter="source", source=src, destination=dst, service="w", protocol="http",
                  status=200, grpc_status="", flags="-", latency_s=latency)
    b.proxy_error("timeout")
    merged = merge_expositions([a.exposition(), b.exposition()]).decode()
    lines = {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
             for line in merged.splitlines() if not line.startswith("#")}
    total = [v for k, v in lines.items() if k.startswith("request_total{")]
    assert total == [3.0]
    count = [v for k, v in lines.items() if k.startswith("response_latency_ms_count{")]
    assert count == [3.0]
    le_1 = [v for k, v in lines.items() if 'le="1.0"' in k and "_bucket" in k]
    assert le_1 == [1.0]
    assert lines['proxy_errors_total{reason="timeout"}'] == 1.0
    assert merged.count("# TYPE request_total counter") == 1


def test_sockaddr_in_decoding() -> None:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 8080) + socket.inet_aton(
        "10.96.0.10") + bytes(8)
    assert decode_sockaddr_in(raw) == ("10.96.0.10", 8080)
    with pytest.raises(ValueError):
        decode_sockaddr_in(struct.pack("=H", socket.AF_INET6) + bytes(14))


def test_callers_that_back_no_service_are_named_from_the_mesh_pod_list() -> None:
    """A load generator backs no Service: the destination proxy still labels its requests with
    its workload (Istio: peer metadata exchange; here the control plane's pod list)."""
    peers = [{"ip": "10.244.1.20", "workload": "loadgen", "namespace": "shop"},
             {"ip": "10.244.1.21", "workload": "loadgen", "namespace": "shop"},
             {"ip": "10.244.1.5", "workload": "stale-name", "namespace": "shop"}]
    t = build_tables(snapshot(peers=peers))
    assert t.peer_of("10.244.1.20") == Peer("loadgen", "shop", "unknown")  # no cert: no principal
    assert t.peer_of("10.244.1.20") is t.peer_of("10.244.1.21")  # one metric key per workload
    assert t.peer_of("10.244.1.5") == Peer("web", "shop", "unknown")  # an endpoint wins
    assert t.peer_of("192.0.2.1") == Peer.unknown()


def test_a_malformed_peer_list_is_a_snapshot_error_not_a_crash() -> None:
    with pytest.raises(SnapshotError):
        build_tables(snapshot(peers=[{"ip": "10.244.1.20"}]))
