"""Retries that cannot multiply load: a per-route policy and a per-service budget.

``RetryPolicy`` answers "may this failed try be sent again?". Replaying is only safe when the
request can be replayed (the engine says so: no body, or a body fully buffered and small) and
when the upstream either never saw it or answered with a status the route declared retryable:

- a connect failure (the reason starts with ``connect``) or an HTTP/2 ``refused-stream`` means
  no byte reached the application, so it is retried whatever the method (``on_connect_failure``);
- a status in ``codes`` means the application answered and the route owner declared that
  answer retryable;
- any other error (reset, timeout after the request went out) may have been processed
  upstream: it is retried only for idempotent methods, and only when the status the proxy
  would answer for it (504 for a timeout, 502 otherwise) is in ``codes``.

``attempts`` bounds every kind: it counts retries after the first try.

``RetryBudget`` is the Finagle/Linkerd budget: over a sliding window of ``ttl_s`` seconds,
retries may not exceed ``ratio`` × the original requests in the window plus a floor of
``min_per_s`` × ``ttl_s`` (so a quiet service can still retry). When a backend fails hard,
retries add at most ``ratio`` extra load instead of multiplying it by ``attempts + 1``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BACKOFF_CAP_FACTOR", "IDEMPOTENT_METHODS", "RetryBudget", "RetryPolicy"]

BACKOFF_CAP_FACTOR = 10.0
"""The jittered backoff never exceeds this many times the base backoff."""

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""RFC 9110 §9.2.2: repeating these has the same effect as sending them once."""

_NOTHING_SENT = ("connect", "refused-stream", "refused_stream")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to retry one request, and how long to wait before each retry."""

    codes: frozenset[int] = frozenset()
    attempts: int = 0
    backoff_s: float = 0.025
    on_connect_failure: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError(f"retry attempts must be >= 0, got {self.attempts}")
        if self.backoff_s < 0:
            raise ValueError(f"retry backoff must be >= 0 seconds, got {self.backoff_s}")

    def should_retry(
        self, attempt: int, *, status: int | None, error: str | None, method: str, replayable: bool
    ) -> bool:
        """Whether to retry after a failed try.

        ``attempt`` is the number of retries already made (0 after the first try failed);
        ``status`` the upstream's answer, or None; ``error`` the proxy's failure reason (an
        ``errors.Reason`` value such as ``connect-refused``), or None when a response came.
        """
        if attempt >= self.attempts:
            return False
        if error is not None and error.startswith(_NOTHING_SENT):
            return self.on_connect_failure
        if method == "CONNECT":
            return False  # a tunnel's bytes went out as they came: nothing to replay
        if error is not None:
            if not replayable or method not in IDEMPOTENT_METHODS:
                return False
            return (504 if "timeout" in error else 502) in self.codes
        return replayable and status is not None and status in self.codes

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt + 1``: full jitter, exponential, capped.

        Full jitter (uniform in [0, min(cap, base × 2^attempt)]) spreads the retries of many
        clients that failed together instead of synchronising them into waves.
        """
        ceiling = self.backoff_s * BACKOFF_CAP_FACTOR
        if attempt < 32:
            ceiling = min(ceiling, self.backoff_s * (1 << max(attempt, 0)))
        return rng.random() * ceiling


class RetryBudget:
    """Sliding-window retry budget shared by all requests to one service.

    The window is kept as ``_SLOTS`` buckets of ``ttl_s / _SLOTS`` seconds, so both calls are
    O(1) and allocate nothing; a deposit expires between ``ttl_s - ttl_s/_SLOTS`` and ``ttl_s``
    after it was made.
    """

    _SLOTS = 10

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_s: float = 10.0,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ratio < 0 or min_per_s < 0 or ttl_s <= 0:
            raise ValueError("ratio and min_per_s must be >= 0 and ttl_s > 0")
        self._ratio = ratio
        self._floor = min_per_s * ttl_s
        self._width = ttl_s / self._SLOTS
        self._clock = clock
        self._deposits = [0] * self._SLOTS
        self._withdrawals = [0] * self._SLOTS
        self._deposited = 0
        self._withdrawn = 0
        self._epoch = int(clock() / self._width)

    def deposit(self) -> None:
        """Count one original request (call once per request, not per try)."""
        epoch = int(self._clock() / self._width)
        slot = epoch % self._SLOTS if epoch == self._epoch else self._advance(epoch)
        self._deposits[slot] += 1
        self._deposited += 1

    def withdraw(self) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is exhausted."""
        slot = self._advance()
        if self._withdrawn + 1 > self._ratio * self._deposited + self._floor:
            return False
        self._withdrawals[slot] += 1
        self._withdrawn += 1
        return True

    def balance(self) -> float:
        """Retries still allowed in the current window (for /config_dump and tests)."""
        self._advance()
        return self._ratio * self._deposited + self._floor - self._withdrawn

    def _advance(self, epoch: int | None = None) -> int:
        """Expire the buckets that left the window; returns the current bucket's index.
        ``epoch``: the current one, when the caller has read the clock already."""
        if epoch is None:
            epoch = int(self._clock() / self._width)
        stale = epoch - self._epoch
        if stale > 0:
            for step in range(1, min(stale, self._SLOTS) + 1):
                slot = (self._epoch + step) % self._SLOTS
                self._deposited -= self._deposits[slot]
                self._withdrawn -= self._withdrawals[slot]
                self._deposits[slot] = 0
                self._withdrawals[slot] = 0
            self._epoch = epoch
        return self._epoch % self._SLOTS
