"""Histogram percentiles against an exact nearest-rank computation, and snapshot arithmetic."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridmesh.lab.workloads._stats import (
    MAX_US,
    RELATIVE_ERROR,
    EdgeStats,
    Histogram,
    StatsMismatch,
    _bounds,
    _index,
)


def exact_percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    rank = max(1, math.ceil(round(q * len(ordered) / 100, 9)))
    return ordered[rank - 1]


def hist_of(values: list[int]) -> Histogram:
    hist = Histogram()
    for v in values:
        hist.record(v)
    return hist


def test_small_values_are_exact() -> None:
    values = list(range(1, 101))  # 1..100 µs, all in the exact range
    hist = hist_of(values)
    assert hist.count == 100
    assert hist.percentile(50) == 50
    assert hist.percentile(99) == 99
    assert hist.percentile(100) == 100
    assert hist.percentile(0) == 1
    assert hist.mean_us == pytest.approx(50.5)


def test_known_data_percentiles_within_bound() -> None:
    # 1000 requests at 1 ms, 90 at 10 ms, 9 at 100 ms, 1 at 2 s: a typical long tail
    values = [1000] * 900 + [10_000] * 90 + [100_000] * 9 + [2_000_000]
    hist = hist_of(values)
    for q, expected in [(50, 1000), (90, 1000), (95, 10_000), (99.9, 100_000), (100, 2_000_000)]:
        assert exact_percentile(values, q) == expected
        assert hist.percentile(q) == pytest.approx(expected, rel=RELATIVE_ERROR)
    assert hist.summary_ms()["p50"] == pytest.approx(1.0, rel=0.01)


def test_buckets_are_contiguous_and_cover_range() -> None:
    previous_high = 0
    for index in range(_index(MAX_US) + 1):
        low, high = _bounds(index)
        assert low == previous_high
        assert _index(low) == index
        assert _index(high - 1) == index
        previous_high = high
    assert previous_high > MAX_US


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=MAX_US), min_size=1, max_size=300),
    st.floats(min_value=0, max_value=100),
)
def test_percentile_error_bound(values: list[int], q: float) -> None:
    exact = exact_percentile(values, q)
    got = hist_of(values).percentile(q)
    assert abs(got - exact) <= exact * RELATIVE_ERROR


@given(st.lists(st.integers(min_value=0, max_value=10**8), max_size=100))
def test_json_round_trip_and_merge(values: list[int]) -> None:
    hist = hist_of(values)
    again = Histogram.from_json(json.loads(json.dumps(hist.to_json())))
    assert again.to_json() == hist.to_json()
    first, second = hist_of(values[: len(values) // 2]), hist_of(values[len(values) // 2 :])
    assert first.plus(second).to_json() == hist.to_json()
    first.merge(second)
    assert first.to_json() == hist.to_json()


@given(
    st.lists(st.integers(min_value=0, max_value=10**7), max_size=100),
    st.lists(st.integers(min_value=0, max_value=10**7), max_size=100),
)
def test_minus_gives_exactly_the_window(before: list[int], window: list[int]) -> None:
    hist = hist_of(before)
    snapshot = Histogram.from_json(hist.to_json())
    for v in window:
        hist.record(v)
    assert hist.minus(snapshot).to_json() == hist_of(window).to_json()


def test_minus_refuses_a_restarted_source() -> None:
    with pytest.raises(StatsMismatch):
        hist_of([1, 2, 3]).minus(hist_of([1, 2, 3, 4]))
    with pytest.raises(StatsMismatch):
        EdgeStats(requests=1).minus(EdgeStats(requests=2))


def test_clamping_and_empty() -> None:
    hist = Histogram()
    assert hist.percentile(99) == 0.0
    hist.record(-5)
    hist.record(MAX_US * 10)
    assert hist.percentile(0) == 0
    assert hist.percentile(100) == pytest.approx(MAX_US, rel=RELATIVE_ERROR)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        hist.percentile(101)


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"v": 2, "p": 6, "count": 0, "sum_us": 0, "buckets": []},
        {"v": 1, "p": 6, "count": 5, "sum_us": 0, "buckets": [[3, 1]]},
        {"v": 1, "p": 6, "count": 1, "sum_us": 0, "buckets": [[10**9, 1]]},
        {"v": 1, "p": 6, "count": 1, "sum_us": 0, "buckets": "nope"},
    ],
)
def test_from_json_rejects_bad_documents(doc: object) -> None:
    with pytest.raises(StatsMismatch):
        Histogram.from_json(doc)


def test_edge_stats_counts_errors_and_round_trips() -> None:
    edge = EdgeStats()
    edge.record(1500, ok=True)
    edge.record(2500, ok=False)
    doc = json.loads(json.dumps(edge.to_json()))
    assert (doc["requests"], doc["errors"]) == (2, 1)
    back = EdgeStats.from_json(doc)
    window = back.minus(
        EdgeStats.from_json(
            {**doc, "requests": 1, "errors": 1} | {"histogram": Histogram().to_json()}
        )
    )
    assert (window.requests, window.errors, window.latency.count) == (1, 0, 2)
    with pytest.raises(StatsMismatch):
        EdgeStats.from_json({"requests": "x"})
