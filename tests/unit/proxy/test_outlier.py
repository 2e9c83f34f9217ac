"""Consecutive-failure ejection: doubling durations, resets, and never emptying a pool."""

from __future__ import annotations

import pytest

from hybridmesh.proxy.outlier import OutlierDetector

POOL = ("a", "b", "c", "d")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(**kwargs: float) -> tuple[OutlierDetector[str], Clock]:
    clock = Clock()
    return OutlierDetector(clock=clock, **kwargs), clock  # type: ignore[arg-type]


def fail(
    detector: OutlierDetector[str], key: str, times: int, pool: tuple[str, ...] = POOL
) -> bool:
    """Record ``times`` failures; True if one of them ejected ``key``."""
    return any([detector.record(key, False, pool) for _ in range(times)])


def test_consecutive_failures_eject_and_the_ejection_ends_on_time() -> None:
    detector, clock = make()
    assert not fail(detector, "a", 4)
    assert detector.ejected(POOL) == set()
    assert detector.record("a", False, POOL)
    assert detector.ejected(POOL) == {"a"}
    clock.now += 29.9
    assert detector.ejected(POOL) == {"a"}
    clock.now += 0.1
    assert detector.ejected(POOL) == set()


def test_each_ejection_lasts_twice_the_previous_up_to_the_cap() -> None:
    detector, clock = make(consecutive=1, base_ejection_s=10.0, max_ejection_s=35.0)
    for expected in (10.0, 20.0, 35.0, 35.0):
        assert detector.record("a", False, POOL)
        clock.now += expected - 0.01
        assert detector.ejected(POOL) == {"a"}
        clock.now += 0.01
        assert detector.ejected(POOL) == set()


def test_a_success_resets_the_run_of_failures() -> None:
    detector, _ = make()
    fail(detector, "a", 4)
    assert not detector.record("a", True, POOL)
    assert not fail(detector, "a", 4)
    assert detector.ejected(POOL) == set()
    assert detector.record("a", False, POOL)


def test_returning_endpoint_needs_a_full_run_to_be_ejected_again() -> None:
    detector, clock = make(consecutive=3)
    assert fail(detector, "a", 3)
    assert not detector.record("a", False, POOL)  # already out: not "newly" ejected
    clock.now += 30.0
    assert not fail(detector, "a", 2)
    assert detector.record("a", False, POOL)


@pytest.mark.parametrize(
    ("size", "ratio", "most"),
    [(1, 0.5, 0), (2, 0.5, 1), (3, 0.5, 1), (4, 0.5, 2), (10, 0.3, 3), (2, 1.0, 1)],
)
def test_never_more_than_the_ratio_and_always_one_left(size: int, ratio: float, most: int) -> None:
    detector, _ = make(consecutive=1, max_ejection_ratio=ratio)
    pool = tuple(f"e{i}" for i in range(size))
    for key in pool:
        fail(detector, key, 3, pool)
    assert len(detector.ejected(pool)) == most


def test_a_blocked_ejection_happens_once_there_is_room() -> None:
    detector, clock = make(consecutive=2, max_ejection_ratio=0.5)
    pool = ("a", "b")
    assert fail(detector, "a", 2, pool)
    assert not fail(detector, "b", 5, pool)  # the pool would be empty
    clock.now += 30.0  # a returns; b is still failing
    assert detector.record("b", False, pool)
    assert detector.ejected(pool) == {"b"}


def test_a_shrunken_pool_keeps_one_endpoint_eligible() -> None:
    detector, clock = make(consecutive=1, max_ejection_ratio=0.5)
    detector.record("a", False, POOL)
    clock.now += 5.0
    detector.record("b", False, POOL)  # ends 5 s after a's
    assert detector.ejected(POOL) == {"a", "b"}
    assert detector.ejected(("a", "b")) == {"b"}  # a, ending soonest, is released
    assert detector.ejected(("a",)) == set()


def test_retain_forgets_removed_endpoints() -> None:
    detector, _ = make(consecutive=2)
    fail(detector, "a", 2)
    fail(detector, "b", 1)
    detector.retain(("c", "d"))
    assert detector.ejected(POOL) == set()
    assert detector.snapshot() == {}
    assert not detector.record("b", False, POOL)  # its earlier failure was forgotten


def test_snapshot_reports_runs_ejections_and_time_left() -> None:
    detector, clock = make(consecutive=2)
    fail(detector, "a", 2)
    fail(detector, "b", 1)
    clock.now += 10.0
    snap = detector.snapshot()
    assert snap["a"] == {"consecutive_failures": 0.0, "ejections": 1.0, "ejected_for_s": 20.0}
    assert snap["b"] == {"consecutive_failures": 1.0, "ejections": 0.0, "ejected_for_s": 0.0}


@pytest.mark.parametrize(
    "kwargs", [{"consecutive": 0}, {"base_ejection_s": 0.0}, {"max_ejection_ratio": 1.5}]
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="consecutive must be"):
        make(**kwargs)
