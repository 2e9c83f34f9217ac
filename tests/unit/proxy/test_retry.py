"""RetryPolicy decides what may be replayed; RetryBudget keeps retries from multiplying load."""

from __future__ import annotations

import random
import statistics

import pytest

from hybridmesh.proxy.retry import BACKOFF_CAP_FACTOR, RetryBudget, RetryPolicy

P503 = RetryPolicy(codes=frozenset({503}), attempts=2)


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def retry(
    policy: RetryPolicy,
    attempt: int = 0,
    *,
    status: int | None = None,
    error: str | None = None,
    method: str = "GET",
    replayable: bool = True,
) -> bool:
    return policy.should_retry(
        attempt, status=status, error=error, method=method, replayable=replayable
    )


def test_configured_codes_are_retried_for_replayable_requests_only() -> None:
    assert retry(P503, status=503)
    assert retry(P503, status=503, method="POST")  # a fully buffered body can be replayed
    assert not retry(P503, status=503, replayable=False)
    assert not retry(P503, status=500)
    assert not retry(P503, status=200)
    assert not retry(P503, status=None)


def test_attempts_bound_every_kind_of_retry() -> None:
    assert retry(P503, 1, status=503)
    assert not retry(P503, 2, status=503)
    assert not retry(P503, 2, error="connect-refused")
    none = RetryPolicy(codes=frozenset({503}))
    assert not retry(none, status=503)
    assert not retry(none, error="connect-refused")


@pytest.mark.parametrize("error", ["connect-refused", "connect-timeout", "refused-stream"])
def test_nothing_sent_failures_are_always_safe(error: str) -> None:
    policy = RetryPolicy(attempts=1)  # no codes at all
    assert retry(policy, error=error, method="POST", replayable=False)
    assert retry(policy, error=error, method="CONNECT", replayable=False)
    off = RetryPolicy(attempts=1, on_connect_failure=False)
    assert not retry(off, error=error)


def test_errors_after_the_request_went_out_need_an_idempotent_method_and_a_code() -> None:
    gateway = RetryPolicy(codes=frozenset({502, 504}), attempts=1)
    assert retry(gateway, error="upstream-reset")  # answered as 502
    assert retry(gateway, error="timeout")  # answered as 504
    assert not retry(gateway, error="upstream-reset", method="POST")  # may have been applied
    assert not retry(gateway, error="timeout", replayable=False)
    assert not retry(RetryPolicy(codes=frozenset({502}), attempts=1), error="timeout")
    assert not retry(RetryPolicy(codes=frozenset({504}), attempts=1), error="upstream-reset")


def test_connect_tunnels_are_never_replayed_after_they_started() -> None:
    policy = RetryPolicy(codes=frozenset({503}), attempts=3)
    assert not retry(policy, status=503, method="CONNECT")


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    policy = RetryPolicy(attempts=10, backoff_s=0.1)
    rng = random.Random(3)
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]:
        draws = [policy.backoff(attempt, rng) for _ in range(2000)]
        assert min(draws) >= 0.0 and max(draws) <= ceiling
        assert max(draws) > 0.95 * ceiling and min(draws) < 0.05 * ceiling  # the full range
        assert statistics.fmean(draws) == pytest.approx(ceiling / 2, rel=0.08)
    assert policy.backoff(10_000, rng) <= 0.1 * BACKOFF_CAP_FACTOR


@pytest.mark.parametrize("kwargs", [{"attempts": -1}, {"backoff_s": -0.5}])
def test_invalid_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="retry"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_budget_floor_allows_min_per_s_times_ttl_without_traffic() -> None:
    budget = RetryBudget(ratio=0.2, min_per_s=10.0, ttl_s=10.0, clock=Clock())
    assert sum(budget.withdraw() for _ in range(150)) == 100
    assert not budget.withdraw()


def test_budget_grows_with_deposits_and_refills_as_the_window_slides() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_s=1.0, ttl_s=10.0, clock=clock)
    for _ in range(1000):
        budget.deposit()
    assert budget.balance() == pytest.approx(210.0)
    assert sum(budget.withdraw() for _ in range(500)) == 210
    clock.now += 5.0
    assert not budget.withdraw()  # still inside the window
    clock.now += 5.0
    assert budget.balance() == pytest.approx(10.0)  # deposits and withdrawals expired
    assert sum(budget.withdraw() for _ in range(50)) == 10


def test_budget_ignores_a_clock_that_stands_still_or_jumps_far() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, min_per_s=0.0, ttl_s=1.0, clock=clock)
    budget.deposit()
    budget.deposit()
    assert budget.withdraw()
    assert not budget.withdraw()
    clock.now += 1e6
    assert budget.balance() == 0.0
    budget.deposit()
    budget.deposit()
    assert budget.withdraw()


def simulate_failing_backend(
    requests: int, rate_per_s: float, *, budgeted: bool = True, seed: int = 5
) -> int:
    """A backend failing 50% (503) under steady traffic, attempts=3; returns retries sent."""
    clock = Clock()
    budget = RetryBudget(clock=clock) if budgeted else RetryBudget(ratio=1e9, clock=clock)
    policy = RetryPolicy(codes=frozenset({503}), attempts=3)
    rng = random.Random(seed)
    sent = 0
    for _ in range(requests):
        clock.now += 1.0 / rate_per_s
        budget.deposit()
        attempt = 0
        while rng.random() < 0.5 and retry(policy, attempt, status=503) and budget.withdraw():
            sent += 1
            attempt += 1
    return sent


@pytest.mark.parametrize("rate_per_s", [1000.0, 200.0])
def test_budget_caps_retries_at_twenty_percent_plus_the_floor(rate_per_s: float) -> None:
    requests = 10_000
    unbudgeted = simulate_failing_backend(requests, rate_per_s, budgeted=False)
    assert unbudgeted == pytest.approx(0.875 * requests, rel=0.03)  # 1/2 + 1/4 + 1/8
    sent = simulate_failing_backend(requests, rate_per_s)
    floor = 10.0 * (requests / rate_per_s + 10.0)  # min_per_s over the run and one window
    assert sent <= 0.2 * requests + floor
    assert sent >= 0.2 * requests  # the budget is spent, not withheld


def test_a_quiet_service_is_covered_by_the_floor() -> None:
    requests = 500
    assert simulate_failing_backend(requests, 5.0) == simulate_failing_backend(
        requests, 5.0, budgeted=False
    )
