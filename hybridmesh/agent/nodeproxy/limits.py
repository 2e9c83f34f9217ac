"""Per-workload isolation inside a shared proxy: connection, rate and stream limits.

One node proxy carries every node pod's traffic, so without limits one pod opening connections
as fast as it can would take the proxy's CPU, file descriptors and tunnel streams from its
neighbours (the "unfair sharing" critique). Each *source workload* (``ns/workload``: replicas of
one workload share a budget, as they share an identity) gets:

- ``max_connections`` open downstream connections at the outbound listener;
- a token bucket of new connections per second (``rate`` sustained, ``burst`` at once), so a
  connect storm is refused at the cost of an accept and a close, before any resolution, policy
  or dial work is spent on it;
- ``max_streams`` concurrent tunnel streams at the destination (inbound) side, per verified
  source identity, across all tunnel connections.

Refusal is fail-fast (the connection is closed / the stream answered 429), never queueing: a
queue would let the noisy pod's backlog delay the others. Sans-IO: the clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Limiter", "Limits", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 256
    rate: float = 500.0  # new connections per second, sustained
    burst: int = 200
    max_streams: int = 512

    def __post_init__(self) -> None:
        if min(self.max_connections, self.burst, self.max_streams) < 1 or self.rate <= 0:
            raise ValueError("node proxy limits must be positive")


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; :meth:`take` spends one if available."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class _Usage:
    __slots__ = ("bucket", "connections", "streams")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.connections = 0
        self.streams = 0


class Limiter:
    """Counts per key (a source workload); ``acquire_*`` says yes or the refusal reason."""

    def __init__(self, limits: Limits | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or Limits()
        self._clock = clock
        self._usage: dict[str, _Usage] = {}

    def _get(self, key: str) -> _Usage:
        usage = self._usage.get(key)
        if usage is None:
            usage = self._usage[key] = _Usage(
                TokenBucket(self.limits.rate, self.limits.burst, self._clock))
        return usage

    def acquire_connection(self, key: str) -> str | None:
        """None (admitted: call :meth:`release_connection` at close) or why it is refused."""
        usage = self._get(key)
        if usage.connections >= self.limits.max_connections:
            return "connection-limit"
        if not usage.bucket.take():
            return "connection-rate"
        usage.connections += 1
        return None

    def release_connection(self, key: str) -> None:
        usage = self._usage.get(key)
        if usage is not None and usage.connections > 0:
            usage.connections -= 1

    def acquire_stream(self, key: str) -> str | None:
        usage = self._get(key)
        if usage.streams >= self.limits.max_streams:
            return "stream-limit"
        usage.streams += 1
        return None

    def release_stream(self, key: str) -> None:
        usage = self._usage.get(key)
        if usage is not None and usage.streams > 0:
            usage.streams -= 1

    def usage(self) -> dict[str, dict[str, int]]:
        """For ``/config_dump`` and tests."""
        return {k: {"connections": u.connections, "streams": u.streams}
                for k, u in self._usage.items() if u.connections or u.streams}
