"""Load balancing: power of two choices over peak-EWMA latency (Finagle, Linkerd, tower).

Each endpoint carries an RTT estimate and a count of requests in flight; its *cost* is
``estimate × (pending + 1)``. A pick draws two distinct endpoints at random and takes the
cheaper, which avoids both the herd behaviour of "always the least loaded" (every proxy piles
onto the same idle endpoint) and the blindness of round robin to a slow endpoint.

The estimate is *peak-sensitive*: a sample above it replaces it at once, so one slow response
is enough to divert traffic; a sample below it only pulls it down gradually (time constant
``tau_s``), so an endpoint must stay fast for a while to win its share back. Between samples
the estimate decays toward zero with the same time constant. Endpoints that keep receiving
traffic are re-sampled all the time, so only the avoided one drifts down: that is what
eventually sends a probe to an endpoint that was slow or failed instead of starving it
forever (after about ``tau × ln(its estimate / the others' cost)``).

An endpoint never sampled is charged the penalty RTT for each request in flight to it (and
reports the penalty as its estimate). An idle new endpoint therefore gets one probe, and no
second request until the first one answers: it is probed gently, not flooded by every
concurrent pick while its real latency is still unknown. A failure is recorded as (at least)
the penalty RTT.

Everything here is pure: the clock and the random source are injected, nothing blocks, and
the per-request path (``pick``/``start``/``finish``) allocates nothing.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Collection, Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["PeakEwmaP2C", "endpoint_label"]

K = TypeVar("K", bound=Hashable)


class _Endpoint:
    """Mutable per-endpoint state; ``rtt`` is the estimate as of ``stamp`` (seconds)."""

    __slots__ = ("pending", "rtt", "sampled", "stamp")

    def __init__(self, rtt: float, stamp: float) -> None:
        self.rtt = rtt
        self.stamp = stamp
        self.pending = 0
        self.sampled = False


class PeakEwmaP2C(Generic[K]):
    """P2C balancer over peak-EWMA cost; keys are any hashable endpoint id, e.g. ``(ip, port)``."""

    def __init__(
        self,
        *,
        tau_s: float = 10.0,
        penalty_rtt_s: float = 1.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if tau_s <= 0 or penalty_rtt_s <= 0:
            raise ValueError("tau_s and penalty_rtt_s must be positive")
        self._tau = tau_s
        self._penalty = penalty_rtt_s
        self._random = (rng or random.Random()).random
        self._clock = clock
        self._keys: list[K] = []
        self._state: dict[K, _Endpoint] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def set_endpoints(self, keys: Iterable[K]) -> None:
        """Replace the endpoint set; endpoints that stay keep their estimate and pending count."""
        now = self._clock()
        old = self._state
        self._keys = list(dict.fromkeys(keys))
        self._state = {k: old.get(k) or _Endpoint(self._penalty, now) for k in self._keys}

    def pick(self, exclude: Collection[K] = ()) -> K | None:
        """The cheaper of two distinct random endpoints not in ``exclude`` (None if none left)."""
        keys = self._keys
        if exclude:
            keys = [k for k in keys if k not in exclude]
        n = len(keys)
        if n <= 1:
            return keys[0] if n else None
        rand = self._random
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        now = self._clock()
        state = self._state
        a, b = keys[i], keys[j]
        return b if self._cost(state[b], now) < self._cost(state[a], now) else a

    def start(self, key: K) -> float:
        """Count a request in flight to ``key``; returns the start time to hand to ``finish``."""
        state = self._state.get(key)
        if state is not None:
            state.pending += 1
        return self._clock()

    def finish(self, key: K, started: float, ok: bool) -> None:
        """Record the outcome of a request begun with ``start``.

        A key removed by ``set_endpoints`` meanwhile is ignored: its state is gone.
        """
        state = self._state.get(key)
        if state is None:
            return
        if state.pending > 0:
            state.pending -= 1
        now = self._clock()
        sample = now - started
        if not ok and sample < self._penalty:
            sample = self._penalty
        if not state.sampled:
            state.rtt, state.stamp, state.sampled = sample, now, True
            return
        # _observe, inlined (once per request): a higher sample replaces the estimate, a
        # lower one blends in with the weight the elapsed time gives it
        elapsed = now - state.stamp
        keep = math.exp(-elapsed / self._tau) if elapsed > 0 else 1.0
        current = state.rtt * keep
        state.rtt = sample if sample >= current else current * keep + sample * (1.0 - keep)
        state.stamp = now

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per-endpoint estimate, pending count and cost (milliseconds), for /config_dump."""
        now = self._clock()
        return {
            endpoint_label(k): {
                "rtt_ms": round(self._estimate(s, now) * 1000.0, 3),
                "pending": float(s.pending),
                "cost_ms": round(self._cost(s, now) * 1000.0, 3),
                "sampled": 1.0 if s.sampled else 0.0,
            }
            for k, s in self._state.items()
        }

    def _estimate(self, state: _Endpoint, now: float) -> float:
        """The estimate decayed toward zero for the time since the last sample."""
        if not state.sampled:
            return self._penalty
        elapsed = now - state.stamp
        return state.rtt * math.exp(-elapsed / self._tau) if elapsed > 0 else state.rtt

    def _cost(self, state: _Endpoint, now: float) -> float:
        """``estimate × (pending + 1)``; never sampled: the penalty per request in flight."""
        if not state.sampled:
            return self._penalty * state.pending
        elapsed = now - state.stamp
        if elapsed > 0:
            return state.rtt * math.exp(-elapsed / self._tau) * (state.pending + 1)
        return state.rtt * (state.pending + 1)


def endpoint_label(key: object) -> str:
    """``ip:port`` for the usual tuple keys, ``str(key)`` otherwise."""
    if isinstance(key, tuple) and len(key) == 2:
        return f"{key[0]}:{key[1]}"
    return str(key)
