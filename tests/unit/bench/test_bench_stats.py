"""Aggregation: median with min–max, ratios and differences against none."""

from __future__ import annotations

import pytest
from bench_fixtures import histogram, latency_metrics, sample

from hybridmesh.bench.model import SampleDoc
from hybridmesh.bench.stats import aggregate, ratio, stat
from hybridmesh.lab.workloads._stats import Histogram


def test_stat_is_median_min_max_count() -> None:
    s = stat([3.0, 1.0, 10.0])
    assert (s.median, s.min, s.max, s.n) == (3.0, 1.0, 10.0, 3)
    assert stat([1.0, 2.0]).median == 1.5


def test_stat_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        stat([])


def test_ratio_is_none_against_a_zero_baseline() -> None:
    assert ratio(3.0, 1.5) == 2.0
    assert ratio(5.0, 0.0) is None


def _three_repeats() -> list[SampleDoc]:
    out = []
    order = 0
    for repeat, (base, envoy) in enumerate([(0.20, 0.60), (0.22, 0.70), (0.90, 0.65)]):
        for contender, p50 in (("none", base), ("envoy-sidecar", envoy)):
            metrics = latency_metrics(p50, p50 * 10, proxy_cpu=0 if contender == "none" else 300)
            out.append(sample(contender, metrics, repeat=repeat, order=order,
                              hist=histogram(p50 * 1000)))  # fmt: skip
            order += 1
    return out


def test_cells_take_the_median_of_repeats_so_one_disturbed_run_does_not_move_it() -> None:
    cells = aggregate(_three_repeats(), ["none", "envoy-sidecar"])
    none, envoy = cells
    assert none.contender == "none" and envoy.contender == "envoy-sidecar"
    assert none.metrics["p50_ms"].median == pytest.approx(0.22)
    assert none.metrics["p50_ms"].max == pytest.approx(0.90)
    assert envoy.metrics["p50_ms"].median == pytest.approx(0.65)
    assert envoy.metrics["p50_ms"].n == 3


def test_none_is_its_own_baseline_ratio_one_delta_zero() -> None:
    none = aggregate(_three_repeats(), ["none", "envoy-sidecar"])[0]
    for name, value in none.ratio.items():
        if none.metrics[name].median == 0:
            assert value is None  # proxy CPU and RSS of none: nothing to divide by
        else:
            assert value == 1.0
    assert set(none.delta.values()) == {0.0}
    assert none.ratio["p50_ms"] == 1.0


def test_contender_ratio_and_added_latency_are_against_nones_medians() -> None:
    envoy = aggregate(_three_repeats(), ["none", "envoy-sidecar"])[1]
    assert envoy.ratio["p50_ms"] == pytest.approx(0.65 / 0.22)
    assert envoy.delta["p50_ms"] == pytest.approx(0.65 - 0.22)
    assert envoy.ratio["cpu_proxy_us_per_op"] is None  # none spent nothing there
    assert envoy.delta["cpu_proxy_us_per_op"] == pytest.approx(300)


def test_histograms_of_the_repeats_are_merged_for_the_cdf() -> None:
    envoy = aggregate(_three_repeats(), ["none", "envoy-sidecar"])[1]
    assert envoy.histogram is not None
    merged = Histogram.from_json(envoy.histogram)
    assert merged.count == 3
    assert 640 <= merged.percentile(50) <= 660


def test_cells_keep_measurement_order_and_contender_order() -> None:
    samples = [
        sample("envoy-sidecar", latency_metrics(1, 2), level=100, order=0),
        sample("none", latency_metrics(1, 2), level=100, order=1),
        sample("none", latency_metrics(1, 2), level=10, order=2),
        sample("envoy-sidecar", latency_metrics(1, 2), level=10, order=3),
    ]
    cells = aggregate(samples, ["none", "envoy-sidecar"])
    assert [(c.level, c.contender) for c in cells] == [
        (100, "none"), (100, "envoy-sidecar"), (10, "none"), (10, "envoy-sidecar"),
    ]  # fmt: skip


def test_a_cell_without_a_baseline_has_no_ratios() -> None:
    cells = aggregate([sample("envoy-sidecar", latency_metrics(1, 2))], ["none", "envoy-sidecar"])
    assert cells[0].ratio == {} and cells[0].delta == {}
