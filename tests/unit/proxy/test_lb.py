"""P2C over peak-EWMA: simulated runs with a fake clock, plus the estimate's update rules."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable

import pytest

from hybridmesh.proxy.lb import PeakEwmaP2C, endpoint_label

Key = tuple[str, int]
A, B, C, D = ("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80), ("10.0.0.4", 80)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(*keys: Key, seed: int = 1, **kwargs: float) -> tuple[PeakEwmaP2C[Key], Clock]:
    clock = Clock()
    lb: PeakEwmaP2C[Key] = PeakEwmaP2C(rng=random.Random(seed), clock=clock, **kwargs)
    lb.set_endpoints(keys)
    return lb, clock


def simulate(
    lb: PeakEwmaP2C[Key],
    clock: Clock,
    latency: Callable[[Key, int], float],
    requests: int,
    interval_s: float = 0.001,
) -> list[Key]:
    """Open-loop arrivals every ``interval_s``; each request completes after ``latency``.

    Returns the endpoint picked for each request, in arrival order.
    """
    inflight: list[tuple[float, int, Key, float]] = []
    picks: list[Key] = []
    t = clock.now
    for n in range(requests):
        t += interval_s
        while inflight and inflight[0][0] <= t:
            done, _, key, started = heapq.heappop(inflight)
            clock.now = done
            lb.finish(key, started, True)
        clock.now = t
        picked = lb.pick()
        assert picked is not None
        started = lb.start(picked)
        heapq.heappush(inflight, (t + latency(picked, n), n, picked, started))
        picks.append(picked)
    return picks


def test_no_endpoint_gives_none_and_one_endpoint_is_always_picked() -> None:
    lb, _ = make()
    assert lb.pick() is None
    lb.set_endpoints([A])
    assert {lb.pick() for _ in range(50)} == {A}


def test_slow_endpoint_gets_under_ten_percent_of_picks() -> None:
    lb, clock = make(A, B, C)
    jitter = random.Random(7)
    base = {A: 0.001, B: 0.001, C: 0.020}
    picks = simulate(lb, clock, lambda k, _: base[k] * jitter.uniform(0.8, 1.2), 20_000)
    share = Counter(picks)[C] / len(picks)
    assert share < 0.10, share
    # and the fast two share the rest evenly (no herd on one of them)
    counts = Counter(picks)
    assert abs(counts[A] - counts[B]) < 0.1 * (counts[A] + counts[B])


def test_latency_spike_diverts_traffic_within_a_few_requests_and_recovers() -> None:
    lb, clock = make(A, B, C, tau_s=1.0)
    spike = range(5_000, 10_000)  # A answers in 50 ms instead of 1 ms for these arrivals

    def latency(key: Key, n: int) -> float:
        return 0.050 if key == A and n in spike else 0.001

    picks = simulate(lb, clock, latency, 20_000)
    during = picks[spike.start : spike.stop]
    assert Counter(during[:1000])[A] <= 5  # the first slow answer already diverts traffic
    assert Counter(during[1000:])[A] <= 25  # later: only decay-driven probes
    recovered = Counter(picks[15_000:])[A] / 5_000
    assert recovered > 0.25  # once fast again and decayed, A wins its share back


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_equal_endpoints_share_load_evenly(seed: int) -> None:
    keys = (A, B, C, D)
    lb, clock = make(*keys, seed=seed)
    jitter = random.Random(seed)
    picks = simulate(lb, clock, lambda _k, _n: jitter.uniform(0.0016, 0.0024), 20_000)
    counts = Counter(picks)
    expected = len(picks) / len(keys)
    chi2 = sum((counts[k] - expected) ** 2 / expected for k in keys)
    assert chi2 < 16.27, counts  # χ² critical value, 3 degrees of freedom, p=0.001


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_equal_endpoints_with_heavy_tailed_latency_stay_near_a_fair_share(seed: int) -> None:
    """Peak sensitivity remembers each endpoint's recent tail for ~tau, so shares drift more
    than independent draws would (a χ² bound does not apply), but stay near a fair share."""
    keys = (A, B, C, D)
    lb, clock = make(*keys, seed=seed)
    jitter = random.Random(seed)
    picks = simulate(lb, clock, lambda _k, _n: jitter.expovariate(1 / 0.002), 20_000)
    counts = Counter(picks)
    assert all(abs(counts[k] / 5_000 - 1) < 0.15 for k in keys), counts


def test_exclude_is_respected() -> None:
    lb, _ = make(A, B, C)
    assert {lb.pick(exclude={A}) for _ in range(300)} == {B, C}
    assert {lb.pick(exclude=[A, B]) for _ in range(50)} == {C}
    assert lb.pick(exclude=(A, B, C)) is None


def test_two_endpoints_are_both_compared_and_the_cheaper_wins() -> None:
    lb, clock = make(A, B)
    for key, rtt in ((A, 0.010), (B, 0.002)):
        started = lb.start(key)
        clock.now += rtt
        lb.finish(key, started, True)
    assert {lb.pick() for _ in range(100)} == {B}
    for _ in range(5):  # B at 2 ms × 6 in flight costs more than A at 10 ms idle
        lb.start(B)
    assert lb.pick() == A


def test_new_endpoint_is_probed_once_not_flooded() -> None:
    lb, clock = make(A, B)
    for key in (A, B):
        started = lb.start(key)
        clock.now += 0.001
        lb.finish(key, started, True)
    lb.set_endpoints([A, B, C])
    picks = []
    for _ in range(100):  # a burst of concurrent requests: each starts, none finishes yet
        picked = lb.pick()
        assert picked is not None
        lb.start(picked)
        picks.append(picked)
    assert picks.count(C) == 1
    assert lb.snapshot()[endpoint_label(C)]["rtt_ms"] == 1000.0  # the penalty until sampled


def test_first_sample_replaces_the_penalty() -> None:
    lb, clock = make(A)
    started = lb.start(A)
    clock.now += 0.004
    lb.finish(A, started, True)
    assert lb.snapshot()["10.0.0.1:80"]["rtt_ms"] == pytest.approx(4.0)


def test_failure_is_recorded_as_the_penalty_rtt() -> None:
    lb, clock = make(A, B, penalty_rtt_s=0.5)
    for key in (A, B):
        started = lb.start(key)
        clock.now += 0.001
        lb.finish(key, started, True)
    started = lb.start(A)
    clock.now += 0.001
    lb.finish(A, started, False)
    assert lb.snapshot()["10.0.0.1:80"]["rtt_ms"] == pytest.approx(500.0)
    assert {lb.pick() for _ in range(50)} == {B}


def test_peak_replaces_at_once_and_lower_samples_blend_with_time_constant() -> None:
    lb, clock = make(A, tau_s=10.0)

    def sample(rtt: float, after: float = 0.0) -> float:
        clock.now += after
        started = lb.start(A)
        clock.now += rtt
        lb.finish(A, started, True)
        return lb.snapshot()["10.0.0.1:80"]["rtt_ms"]

    assert sample(0.002) == pytest.approx(2.0)
    assert sample(0.030) == pytest.approx(30.0)  # peak: replaced at once
    assert 29.0 < sample(0.002) < 30.0  # 2 ms later: barely moved
    # ten seconds (one tau) idle, then a fast sample: mostly forgotten, still above 2 ms
    assert 2.0 < sample(0.002, after=10.0) < 30.0 / 2.718
    for _ in range(50):
        last = sample(0.002, after=1.0)
    assert last == pytest.approx(2.0, abs=0.1)


def test_idle_estimate_decays_toward_zero_so_a_penalised_endpoint_is_probed_again() -> None:
    lb, clock = make(A, B, tau_s=1.0, penalty_rtt_s=1.0)

    def request(key: Key, ok: bool = True) -> None:
        started = lb.start(key)
        clock.now += 0.001
        lb.finish(key, started, ok)

    request(A, ok=False)
    request(B)
    assert lb.snapshot()["10.0.0.1:80"]["rtt_ms"] == pytest.approx(1000.0, rel=1e-2)
    clock.now += 1.0
    assert lb.snapshot()["10.0.0.1:80"]["rtt_ms"] == pytest.approx(1000.0 / 2.71828, rel=1e-2)
    request(B)  # B stays sampled by traffic at ~1 ms; A, untouched, keeps decaying
    assert lb.pick() == B
    clock.now += 10.0
    request(B)  # A has decayed to ~0.02 ms: below B's fresh 1 ms, so it gets a probe
    assert lb.pick() == A


def test_set_endpoints_keeps_survivors_state_and_forgets_the_rest() -> None:
    lb, clock = make(A, B)
    started = lb.start(A)
    clock.now += 0.007
    lb.finish(A, started, True)
    lb.start(A)
    in_flight_b = lb.start(B)
    before = lb.snapshot()["10.0.0.1:80"]
    lb.set_endpoints([A, C, A])
    snap = lb.snapshot()
    assert set(snap) == {"10.0.0.1:80", "10.0.0.3:80"}
    assert snap["10.0.0.1:80"] == before
    assert snap["10.0.0.3:80"]["sampled"] == 0.0
    lb.finish(B, in_flight_b, False)  # B was removed meanwhile: ignored, no error
    assert len(lb) == 2 and B not in lb


def test_finish_never_drives_pending_negative() -> None:
    lb, _ = make(A)
    lb.set_endpoints([A])
    lb.finish(A, lb.start(A), True)
    lb.finish(A, 0.0, True)
    assert lb.snapshot()["10.0.0.1:80"]["pending"] == 0.0


def test_invalid_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        PeakEwmaP2C(tau_s=0.0)
    with pytest.raises(ValueError, match="positive"):
        PeakEwmaP2C(penalty_rtt_s=-1.0)


def test_labels_name_tuple_keys_as_host_port() -> None:
    assert endpoint_label(("10.1.2.3", 8080)) == "10.1.2.3:8080"
    assert endpoint_label("pod-a") == "pod-a"
