"""Proxies' own counters, in one shape: did the proxy carry the run?"""

from __future__ import annotations

from hybridmesh.bench.probes import envoy_counts, proxy_checks, sidecar_counts

ENVOY = {
    "http.outbound_http.downstream_rq_total": 1010,
    "http.inbound_http.downstream_rq_total": 7,
    "tcp.outbound_tcp.downstream_cx_total": 3,
    "listener.0.0.0.0_15001.downstream_cx_total": 99,
}

METRICS = """\
# HELP request_total Requests.
# TYPE request_total counter
request_total{reporter="source",destination_service="http",response_code="200"} 900
request_total{reporter="source",destination_service="http",response_code="503"} 5
request_total{reporter="destination",destination_service="http",response_code="200"} 40
# HELP tcp_open_total Connections opened.
# TYPE tcp_open_total counter
tcp_open_total{reporter="source",destination_service="tcp"} 2
tcp_open_total{reporter="destination",destination_service="tcp"} 4
"""


def test_envoy_client_side_is_the_outbound_listener_server_side_the_inbound() -> None:
    assert envoy_counts(ENVOY, "client") == {"http": 1010, "tcp": 3}
    assert envoy_counts(ENVOY, "server") == {"http": 7, "tcp": 0}


def test_hybridmesh_sides_are_the_reporter_label() -> None:
    assert sidecar_counts(METRICS, "client") == {"http": 905, "tcp": 2}
    assert sidecar_counts(METRICS, "server") == {"http": 40, "tcp": 4}
    assert sidecar_counts("", "client") == {"http": 0, "tcp": 0}


def test_http_share_is_requests_seen_over_requests_made() -> None:
    before = {"client": {"http": 10}, "server": {"http": 10}}
    after = {"client": {"http": 1010}, "server": {"http": 510}}
    checks = proxy_checks(before, after, http=True, ops=1000)
    assert checks == {"proxy_client_share": 1.0, "proxy_server_share": 0.5}
    assert proxy_checks({}, {}, http=True, ops=1000) == {}  # no proxy: nothing to check


def test_tcp_share_is_whether_the_proxy_saw_the_connection() -> None:
    before = {"client": {"tcp": 3}, "server": {"tcp": 0}}
    after = {"client": {"tcp": 4}, "server": {"tcp": 0}}
    checks = proxy_checks(before, after, http=False, ops=123456)
    assert checks == {"proxy_client_share": 1.0, "proxy_server_share": 0.0}


def test_a_side_read_only_once_is_not_judged() -> None:
    assert proxy_checks({"client": {"http": 1}}, {"client": {"http": 2}, "server": {"http": 9}},
                        http=True, ops=1) == {"proxy_client_share": 1.0}  # fmt: skip
