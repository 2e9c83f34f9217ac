"""Per-workload limits: one workload's storm is refused, another's budget is untouched."""

from __future__ import annotations

import pytest

from hybridmesh.agent.nodeproxy.limits import Limiter, Limits, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_connection_limit_is_per_workload_and_released() -> None:
    lim = Limiter(Limits(max_connections=2, rate=1000, burst=1000), clock=Clock())
    assert lim.acquire_connection("a") is None
    assert lim.acquire_connection("a") is None
    assert lim.acquire_connection("a") == "connection-limit"
    assert lim.acquire_connection("b") is None  # the neighbour is unaffected
    lim.release_connection("a")
    assert lim.acquire_connection("a") is None


def test_rate_refuses_a_storm_and_refills() -> None:
    clock = Clock()
    lim = Limiter(Limits(max_connections=1000, rate=10, burst=3), clock=clock)
    results = [lim.acquire_connection("noisy") for _ in range(5)]
    assert results == [None, None, None, "connection-rate", "connection-rate"]
    assert lim.acquire_connection("quiet") is None
    clock.now += 0.1  # one token
    assert lim.acquire_connection("noisy") is None
    assert lim.acquire_connection("noisy") == "connection-rate"


def test_streams_are_limited_per_identity() -> None:
    lim = Limiter(Limits(max_streams=1))
    assert lim.acquire_stream("spiffe://td/ns/a/sa/x") is None
    assert lim.acquire_stream("spiffe://td/ns/a/sa/x") == "stream-limit"
    assert lim.acquire_stream("spiffe://td/ns/a/sa/y") is None
    lim.release_stream("spiffe://td/ns/a/sa/x")
    assert lim.usage() == {"spiffe://td/ns/a/sa/y": {"connections": 0, "streams": 1}}


def test_bucket_never_exceeds_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(100.0, 2, clock)
    clock.now = 1000.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Limits(max_connections=0)
