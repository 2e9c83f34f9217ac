"""ProxyMetrics: names and labels as docs/proxy.md says, cached children, own registry."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from hybridmesh.telemetry.proxy_metrics import (
    LATENCY_BUCKETS_MS,
    AccessLog,
    Peer,
    ProxyMetrics,
)

CLIENT = Peer("client", "shop", "spiffe://cluster.local/ns/shop/sa/client")
WEB = Peer("web", "shop", "spiffe://cluster.local/ns/shop/sa/web")
SVC = "web.shop.svc.cluster.local"


def _request(m: ProxyMetrics, status: int = 200, latency_s: float = 0.0012, **kw: object) -> None:
    args: dict[str, object] = {
        "reporter": "source",
        "source": CLIENT,
        "destination": WEB,
        "service": SVC,
        "protocol": "http",
        "status": status,
        "grpc_status": "",
        "flags": "-",
        "latency_s": latency_s,
    }
    args.update(kw)
    m.request(**args)  # type: ignore[arg-type]


def _samples(m: ProxyMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def test_request_labels_follow_istio_and_values_count() -> None:
    m = ProxyMetrics()
    _request(m)
    _request(m)
    _request(m, status=503, flags="UF")
    series = {tuple(sorted(lb.items())): v for lb, v in _samples(m)["request_total"]}
    ok = dict(next(k for k in series if ("response_code", "200") in k))
    assert ok == {
        "reporter": "source",
        "source_workload": "client",
        "source_workload_namespace": "shop",
        "source_principal": "spiffe://cluster.local/ns/shop/sa/client",
        "destination_workload": "web",
        "destination_workload_namespace": "shop",
        "destination_principal": "spiffe://cluster.local/ns/shop/sa/web",
        "destination_service": SVC,
        "request_protocol": "http",
        "response_code": "200",
        "grpc_response_status": "",
        "response_flags": "-",
    }
    assert sorted(series.values()) == [1.0, 2.0]


def test_latency_histogram_is_in_milliseconds_without_flags_label() -> None:
    m = ProxyMetrics()
    _request(m, latency_s=0.0003)  # 0.3 ms → bucket le=0.5
    _request(m, latency_s=0.02, flags="UT")  # 20 ms → bucket le=25; other flags, same series
    samples = _samples(m)
    buckets = {lb["le"]: v for lb, v in samples["response_latency_ms_bucket"]}
    assert "response_flags" not in samples["response_latency_ms_bucket"][0][0]
    assert (buckets["0.25"], buckets["0.5"], buckets["10.0"], buckets["25.0"]) == (0, 1, 1, 2)
    assert buckets["+Inf"] == 2
    assert samples["response_latency_ms_sum"][0][1] == pytest.approx(20.3)


def test_buckets_cover_sub_millisecond_to_thirty_seconds() -> None:
    assert LATENCY_BUCKETS_MS[0] <= 0.1
    assert 30000.0 in LATENCY_BUCKETS_MS
    assert list(LATENCY_BUCKETS_MS) == sorted(LATENCY_BUCKETS_MS)


def test_tcp_counters_and_bytes() -> None:
    m = ProxyMetrics()
    edge = {"reporter": "destination", "source": CLIENT, "destination": WEB, "service": SVC}
    m.tcp_open(**edge)  # type: ignore[arg-type]
    m.tcp_open(**edge)  # type: ignore[arg-type]
    m.tcp_close(**edge, read_bytes=100, write_bytes=2048)  # type: ignore[arg-type]
    samples = _samples(m)
    assert [v for _, v in samples["tcp_open_total"]] == [2.0]
    assert [v for _, v in samples["tcp_close_total"]] == [1.0]
    assert [v for _, v in samples["tcp_read_bytes_total"]] == [100.0]
    assert [v for _, v in samples["tcp_write_bytes_total"]] == [2048.0]
    labels = samples["tcp_open_total"][0][0]
    assert labels["reporter"] == "destination"
    assert labels["source_workload"] == "client"
    assert labels["destination_service"] == SVC


def test_retry_ejection_and_error_counters() -> None:
    m = ProxyMetrics()
    m.retry(SVC, exhausted=False)
    m.retry(SVC, exhausted=False)
    m.retry(SVC, exhausted=True)
    m.ejection(SVC)
    m.proxy_error("no_endpoints")
    m.proxy_error("no_endpoints")
    samples = _samples(m)
    assert samples["retry_total"] == [({"destination_service": SVC}, 2.0)]
    assert samples["retry_budget_exhausted_total"] == [({"destination_service": SVC}, 1.0)]
    assert samples["outlier_ejections_total"] == [({"destination_service": SVC}, 1.0)]
    assert samples["proxy_errors_total"] == [({"reason": "no_endpoints"}, 2.0)]


def test_exposition_has_no_created_series_and_own_registry() -> None:
    m = ProxyMetrics()
    _request(m)
    text = m.exposition().decode()
    assert "_created" not in text
    assert "request_total{" in text
    assert b"request_total" not in _global_exposition()
    # two instances do not share counters
    other = ProxyMetrics()
    assert "request_total{" not in other.exposition().decode()


def _global_exposition() -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(REGISTRY)


def test_uses_the_given_registry() -> None:
    registry = CollectorRegistry()
    m = ProxyMetrics(registry)
    _request(m)
    assert registry.get_sample_value("request_total", _labels_of(m)) == 1.0


def _labels_of(m: ProxyMetrics) -> dict[str, str]:
    return next(lb for lb, _ in _samples(m)["request_total"])


def test_children_are_cached_per_label_tuple(monkeypatch: pytest.MonkeyPatch) -> None:
    m = ProxyMetrics()
    _request(m)
    _request(m, status=404)

    def no_more_labels(*_a: object, **_k: object) -> None:
        raise AssertionError(".labels() called on the hot path for a known label tuple")

    monkeypatch.setattr(m.request_total, "labels", no_more_labels)
    monkeypatch.setattr(m.response_latency_ms, "labels", no_more_labels)
    # equal but not identical peers hit the cache too
    _request(m, source=Peer("client", "shop", CLIENT.principal))
    _request(m, status=404)
    assert sorted(v for _, v in _samples(m)["request_total"]) == [2.0, 2.0]


def test_unknown_peer_and_access_log_reexport() -> None:
    assert Peer.unknown() == Peer("unknown", "unknown", "unknown")
    assert AccessLog(None).enabled is False
