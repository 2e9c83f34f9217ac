"""The load generator check: target rate reached, generator not saturated."""

from __future__ import annotations

from bench_fixtures import latency_metrics, sample

from hybridmesh.bench.loadcheck import load_checks
from hybridmesh.bench.stats import aggregate


def test_a_baseline_below_its_target_rate_is_flagged() -> None:
    slow = {**latency_metrics(0.3, 1.0), "rps": 1800.0}
    cells = aggregate([
        sample("none", latency_metrics(0.3, 1.0), level=1000, order=0),
        sample("none", slow, level=2000, order=1),
    ])  # fmt: skip
    checks = {c.level: c for c in load_checks(cells)}
    assert checks[1000].ok
    assert not checks[2000].ok and "90% of the target rate" in checks[2000].problems[0]
    assert checks[2000].target_rps == 2000 and checks[2000].achieved_rps == 1800


def test_a_saturated_load_generator_is_flagged_even_without_a_target() -> None:
    busy = {"rps": 5000.0, "cpu_loadgen_pct": 97.0}
    cells = aggregate([sample("none", busy, scenario="grpc", level=16)])
    (check,) = load_checks(cells)
    assert check.target_rps is None and not check.ok
    assert "97% of a core" in check.problems[0]


def test_cells_without_a_load_generator_reading_are_not_checked() -> None:
    cells = aggregate([sample("none", {"failed_pct": 0.0}, scenario="blast-radius", level=None)])
    assert load_checks(cells) == []


def test_a_run_that_names_its_own_target_is_checked_against_it() -> None:
    light = {"rps": 80.0, "target_rps": 100.0, "cpu_loadgen_pct": 3.0}
    cells = aggregate([sample("none", light, scenario="scale", level=8)])
    (check,) = load_checks(cells)
    assert check.target_rps == 100 and "80% of the target rate" in check.problems[0]
