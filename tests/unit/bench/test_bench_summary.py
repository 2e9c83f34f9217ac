"""The headline table: added latency at 1000 req/s, max throughput, proxy cost."""

from __future__ import annotations

import pytest
from bench_fixtures import latency_metrics, sample

from hybridmesh.bench.model import CellDoc
from hybridmesh.bench.stats import aggregate
from hybridmesh.bench.summary import summary_rate, summary_rows


def _cells() -> list[CellDoc]:
    samples = [
        sample("none", latency_metrics(0.2, 1.0), level=100, order=0),
        sample("envoy-sidecar", latency_metrics(0.6, 3.0, proxy_cpu=400), level=100, order=1),
        sample("none", latency_metrics(0.25, 2.0), level=1000, order=2),
        sample("envoy-sidecar", latency_metrics(0.65, 5.0, proxy_cpu=350), level=1000, order=3),
        sample("none", {"rps": 60000.0}, scenario="http-throughput", level=16, order=4),
        sample("envoy-sidecar", {"rps": 6000.0}, scenario="http-throughput", level=16, order=5),
        sample("none", {"tps": 50000.0}, scenario="tcp-rr", level=None, order=6),
        sample("envoy-sidecar", {"tps": 12000.0}, scenario="tcp-rr", level=None, order=7),
    ]  # fmt: skip
    return aggregate(samples, ["none", "envoy-sidecar"])


def test_summary_rate_prefers_1000_then_the_closest_rate() -> None:
    assert summary_rate(_cells()) == 1000
    cells = aggregate([sample("none", latency_metrics(1, 2), level=lvl) for lvl in (200, 2000)])
    assert summary_rate(cells) == 200  # |200-1000| < |2000-1000|
    assert summary_rate([]) is None


def test_rows_quote_added_latency_throughput_ratio_and_proxy_cost() -> None:
    rows = summary_rows(_cells(), ["none", "envoy-sidecar"], ["same-node"])
    none, envoy = rows
    assert none.values["added_p50_ms"] == 0.0 and none.values["max_rps_ratio"] == 1.0
    assert envoy.values["added_p50_ms"] == pytest.approx(0.40)
    assert envoy.values["added_p99_ms"] == pytest.approx(3.0)
    assert envoy.values["max_rps"] == 6000.0
    assert envoy.values["max_rps_ratio"] == pytest.approx(0.1)
    assert envoy.values["rr_tps"] == 12000.0
    assert envoy.values["proxy_cpu_us_per_req"] == 350.0  # at 1000 req/s, not at 100
    assert envoy.values["proxy_rss_mib"] == 81.0
    assert envoy.values["loadgen_cpu_pct"] == 12.0
    assert envoy.values["stream_gbps"] is None  # not measured


def test_rows_only_for_measured_variants() -> None:
    rows = summary_rows(_cells(), ["none", "envoy-sidecar", "sidecar"], ["same-node", "cross-node"])
    assert [(r.contender, r.variant) for r in rows] == [
        ("none", "same-node"),
        ("envoy-sidecar", "same-node"),
    ]
