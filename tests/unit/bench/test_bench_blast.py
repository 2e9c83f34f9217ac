"""Blast radius and upgrade figures from per-request records: shares, paths, recovery."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.bench.blast import (
    Record,
    blast_metrics,
    in_window,
    recovery,
    upgrade_metrics,
)


def _steady(
    start: float, end: float, step: float, *, fail: tuple[float, float] = (0, 0)
) -> list[Record]:
    """A request every ``step`` s, done 1 ms later; failed when due inside ``fail``."""
    out: list[Record] = []
    for i in range(round((end - start) / step)):
        t = round(start + i * step, 6)
        out.append((t, t + 0.001, not fail[0] <= t < fail[1]))
    return out


def test_recovery_is_kill_to_first_success_after_the_first_failure() -> None:
    records = _steady(0.0, 10.0, 0.1, fail=(5.0, 6.5))
    outcome = recovery(records, at=5.0, end=10.0)
    assert outcome.recovered
    assert outcome.seconds == pytest.approx(1.501, abs=1e-6)  # due 6.5, done 6.501


def test_a_success_in_the_instant_of_the_kill_is_not_recovery() -> None:
    # due 5.0 slipped through (ok), the path fails from 5.1 to 7.0
    records = _steady(0.0, 10.0, 0.1, fail=(5.05, 7.0))
    assert recovery(records, at=5.0, end=10.0).seconds == pytest.approx(2.001, abs=1e-3)


def test_a_path_that_never_failed_recovered_at_once() -> None:
    assert recovery(_steady(0.0, 10.0, 0.1), at=5.0, end=10.0).seconds == 0.0


def test_a_path_still_down_at_the_end_reports_the_window_and_not_recovered() -> None:
    outcome = recovery(_steady(0.0, 10.0, 0.1, fail=(5.0, 99.0)), at=5.0, end=10.0)
    assert not outcome.recovered and outcome.seconds == pytest.approx(5.0)


def test_blast_metrics_split_affected_and_unaffected_paths() -> None:
    paths = {
        "same>blast-a": _steady(0.0, 10.0, 0.1, fail=(5.0, 6.0)),
        "cross>blast-a": _steady(0.0, 10.0, 0.1, fail=(5.0, 7.0)),
        "same>blast-b": _steady(0.0, 10.0, 0.1),
        "cross>blast-b": _steady(0.0, 10.0, 0.1, fail=(3.0, 3.15)),
    }
    m = blast_metrics(paths, ["same>blast-a", "cross>blast-a"], killed_at=5.0, end=10.0)
    total = sum(len(p) for p in paths.values())
    assert m["requests"] == total
    assert m["failed_affected"] == 10 + 20
    assert m["failed_unaffected"] == 2  # the neighbours' own failures are counted, not hidden
    assert m["failed_pct"] == pytest.approx(100 * 32 / total)
    assert m["recovery_s"] == pytest.approx(2.001, abs=1e-3)  # the worst affected path
    assert m["recovered"] == 1.0


def test_nothing_killed_means_no_recovery_to_wait_for() -> None:
    paths = {"same>blast-a": _steady(0.0, 5.0, 0.1)}
    m = blast_metrics(paths, ["same>blast-a"], killed_at=None, end=5.0)
    assert m["failed"] == 0 and m["recovery_s"] == 0 and m["recovered"] == 1


def test_upgrade_counts_every_path_and_reports_the_restarts() -> None:
    paths = {"a": _steady(0.0, 4.0, 0.1, fail=(1.0, 1.5)), "b": _steady(0.0, 4.0, 0.1)}
    m = upgrade_metrics(paths, restarts=7, seconds=2.5)
    assert m["failed"] == 5 and m["pod_restarts"] == 7 and m["upgrade_s"] == 2.5
    assert m["failed_pct"] == pytest.approx(100 * 5 / 80)


def test_window_keeps_requests_due_inside_it_typed_and_sorted() -> None:
    raw = [[3.0, 3.1, True], [0.5, 0.6, False], [1.0, 1.2, 1], [2.0, 2.5, 0]]
    assert in_window(raw, 1.0, 3.0) == [(1.0, 1.2, True), (2.0, 2.5, False)]


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 1), st.booleans()), max_size=60),
       st.floats(0, 100))  # fmt: skip
def test_recovery_is_never_negative_nor_past_the_window(
    raw: list[tuple[float, float, bool]], at: float
) -> None:
    records = sorted((due, due + d, ok) for due, d, ok in raw)
    end = 101.0 + 1.0
    outcome = recovery(records, at, end)
    assert 0.0 <= outcome.seconds <= end - at + 1.0
