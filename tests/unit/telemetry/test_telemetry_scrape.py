"""scrape: parsing, deltas with resets, success classification, PromQL-like quantiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.telemetry.proxy_metrics import Peer, ProxyMetrics
from hybridmesh.telemetry.scrape import (
    ScrapeError,
    delta,
    edge_stats,
    group_stats,
    histogram_quantile,
    is_failure,
    merge,
    open_connections,
    parse,
    workload_stats,
)

INF = math.inf


def _lbl(reporter: str, src: str, dst: str, extra: str = "") -> str:
    return (
        f'reporter="{reporter}",source_workload="{src}",source_workload_namespace="shop",'
        f'destination_workload="{dst}",destination_workload_namespace="shop"{extra}'
    )


def _exposition(ok: int, fail: int, buckets: dict[str, int], *, opened: int = 0) -> str:
    """One pod of `web`: inbound from `client` (ok 200s, fail 503s) and an outbound edge."""
    inbound = _lbl("destination", "client", "web")
    lines = [
        "# TYPE request_total counter",
        f'request_total{{{inbound},response_code="200",request_protocol="http"}} {ok}',
        f'request_total{{{inbound},response_code="503",request_protocol="http"}} {fail}',
        f'request_total{{{_lbl("source", "web", "db")},response_code="200"}} 7',
        f'request_created{{{inbound},response_code="200",request_protocol="http"}} 1.7e9',
        "# TYPE response_latency_ms histogram",
    ]
    lines += [f'response_latency_ms_bucket{{{inbound},le="{le}"}} {n}' for le, n in buckets.items()]
    lines += [
        "# TYPE tcp_open_total counter",
        f"tcp_open_total{{{inbound}}} {opened}",
        "# TYPE tcp_close_total counter",
        f"tcp_close_total{{{inbound}}} 1",
    ]
    return "\n".join(lines) + "\n"


BEFORE = _exposition(100, 0, {"1.0": 50, "5.0": 90, "10.0": 100, "+Inf": 100}, opened=3)
AFTER = _exposition(190, 10, {"1.0": 100, "5.0": 170, "10.0": 196, "+Inf": 200}, opened=5)


def test_parse_keeps_samples_and_drops_created() -> None:
    samples = parse(BEFORE)
    names = {name for name, _ in samples}
    assert names == {"request_total", "response_latency_ms_bucket", "tcp_open_total",
                     "tcp_close_total"}  # fmt: skip
    assert sum(v for (n, _), v in samples.items() if n == "request_total") == 107


def test_parse_rejects_garbage_with_a_typed_error() -> None:
    with pytest.raises(ScrapeError, match="not Prometheus text"):
        parse("request_total{reporter=unquoted} 1\n")


@given(st.text(max_size=200))
def test_parse_any_text_gives_samples_or_scrape_error(text: str) -> None:
    try:
        samples = parse(text)
    except ScrapeError:
        return
    assert all(isinstance(v, float) for v in samples.values())


def test_window_stats_per_workload() -> None:
    window = delta(parse(BEFORE), parse(AFTER))
    stats = workload_stats(window, 10.0)
    assert set(stats) == {("shop", "web")}  # the outbound edge is not web's inbound view
    web = stats[("shop", "web")]
    assert web.requests == 100
    assert web.failures == 10
    assert web.success_rate == pytest.approx(0.9)
    assert web.rps == pytest.approx(10.0)
    # window buckets: le1: 50, le5: 80, le10: 96, +Inf: 100
    assert web.p50_ms == pytest.approx(1.0)  # rank 50 is exactly le=1's count
    assert web.p95_ms == pytest.approx(5 + 5 * (95 - 80) / 16)
    assert web.p99_ms == pytest.approx(10.0)  # rank 99 falls in +Inf → highest finite bound


def test_edge_stats_use_the_callers_view() -> None:
    window = delta(parse(BEFORE), parse(AFTER))
    edges = edge_stats(window, 2.0)
    assert set(edges) == {("shop", "web", "shop", "db")}
    assert edges[("shop", "web", "shop", "db")].requests == 0  # 7 → 7
    assert edges[("shop", "web", "shop", "db")].success_rate is None


def test_counter_reset_counts_the_new_value() -> None:
    before = parse(_exposition(500, 5, {"+Inf": 505, "1.0": 505}))
    after = parse(_exposition(20, 1, {"+Inf": 21, "1.0": 21}))  # proxy restarted
    stats = workload_stats(delta(before, after), 1.0)[("shop", "web")]
    assert (stats.requests, stats.failures) == (21, 1)


def test_new_series_count_from_zero_and_vanished_ones_not_at_all() -> None:
    key_a = ("request_total", (("reporter", "destination"), ("x", "a")))
    key_b = ("request_total", (("reporter", "destination"), ("x", "b")))
    assert delta({key_a: 5.0}, {key_b: 3.0}) == {key_b: 3.0}


def test_merge_sums_pods() -> None:
    one = parse(BEFORE)
    two = merge([one, one])
    assert all(two[k] == 2 * v for k, v in one.items())


def test_open_connections_from_latest_totals() -> None:
    conns = open_connections(parse(AFTER), reporter="destination", by=("destination_workload",))
    assert conns == {("web",): 4}


@pytest.mark.parametrize(
    ("labels", "failed"),
    [
        ({"response_code": "200"}, False),
        ({"response_code": "404"}, False),
        ({"response_code": "500"}, True),
        ({"response_code": "503"}, True),
        ({"response_code": "0"}, True),
        ({"response_code": ""}, True),
        ({"response_code": "200", "request_protocol": "grpc", "grpc_response_status": "0"}, False),
        ({"response_code": "200", "request_protocol": "grpc", "grpc_response_status": "14"}, True),
        ({"response_code": "200", "request_protocol": "http", "grpc_response_status": "14"}, False),
    ],
)
def test_failure_classification(labels: dict[str, str], failed: bool) -> None:
    assert is_failure(labels) is failed


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # PromQL reference: histogram_quantile over these cumulative buckets
        (0.5, [(1, 10), (2, 20), (INF, 20)], 1.0),
        (0.75, [(1, 10), (2, 20), (INF, 20)], 1.5),
        (0.25, [(1, 10), (2, 20), (INF, 20)], 0.5),  # first bucket interpolates from 0
        (0.99, [(1, 10), (2, 20), (INF, 40)], 2.0),  # in +Inf → highest finite bound
        (0.0, [(1, 10), (2, 20), (INF, 20)], 0.0),
        (1.0, [(1, 10), (2, 20), (INF, 20)], 2.0),
        (0.5, [(INF, 20), (2, 20), (1, 10)], 1.0),  # order does not matter
        (0.5, [(1, 12), (2, 10), (INF, 20)], 10 / 12),  # non-monotonic: running max
    ],
)
def test_histogram_quantile_matches_promql(
    q: float, buckets: list[tuple[float, float]], expected: float
) -> None:
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize("buckets", [[], [(INF, 5)], [(1, 0), (INF, 0)], [(1, 3), (2, 5)]])
def test_histogram_quantile_unknown(buckets: list[tuple[float, float]]) -> None:
    assert histogram_quantile(0.5, buckets) is None


def test_histogram_quantile_rejects_bad_q() -> None:
    with pytest.raises(ValueError, match="quantile"):
        histogram_quantile(1.5, [(1, 1), (INF, 1)])


@given(
    st.lists(st.floats(0.01, 40000), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.95, 0.99]),
)
def test_quantile_is_within_the_bucket_of_the_true_quantile(
    latencies_ms: list[float], q: float
) -> None:
    """End to end: ProxyMetrics → text → parse → the estimate lies in the right bucket."""
    m = ProxyMetrics()
    peer = Peer("web", "shop", "p")
    for ms in latencies_ms:
        m.request(
            reporter="destination", source=peer, destination=peer, service="s",
            protocol="http", status=200, grpc_status="", flags="-", latency_s=ms / 1000,
        )  # fmt: skip
    stats = workload_stats(parse(m.exposition().decode()), 1.0)[("shop", "web")]
    estimate = {0.5: stats.p50_ms, 0.95: stats.p95_ms, 0.99: stats.p99_ms}[q]
    assert estimate is not None
    ordered = sorted(latencies_ms)
    true = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    bounds = [0.0, *(b for b in (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500,
                                 1000, 2500, 5000, 10000, 30000))]  # fmt: skip
    lower = max(b for b in bounds if b < true) if true > 0.1 else 0.0
    upper = min((b for b in bounds if b >= true), default=30000.0)
    assert lower - 1e-9 <= estimate <= upper + 1e-9


def test_group_stats_where_filters_labels() -> None:
    window = parse(AFTER)
    only = group_stats(window, 1.0, reporter="destination", by=("response_code",),
                       where={"response_code": "503"})  # fmt: skip
    assert list(only) == [("503",)]
    assert only[("503",)].failures == 10
