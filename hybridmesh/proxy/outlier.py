"""Outlier detection: take an endpoint that keeps failing out of rotation for a while.

The balancer (lb.py) already steers away from slow or failing endpoints, but only softly; an
endpoint that fails *every* request (crashed app behind a live socket, wrong port) should not
be tried at all. After ``consecutive`` failures in a row (5xx answers or connect failures, as
the caller decides) an endpoint is ejected for ``base_ejection_s × 2^n``, n = the times it was
ejected before (capped at ``max_ejection_s``), then returns on its own. A success resets the
run of failures. Envoy and Istio work the same way.

Ejection must never take a service down: at most ``max_ejection_ratio`` of the pool is ejected
at once, and at least one endpoint always stays eligible, even when the pool shrinks under the
ejected endpoints (those whose ejection ends soonest are released first).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Hashable
from typing import Generic, TypeVar

from hybridmesh.proxy.lb import endpoint_label

__all__ = ["OutlierDetector"]

K = TypeVar("K", bound=Hashable)


class _Record:
    __slots__ = ("ejections", "failures", "until")

    def __init__(self) -> None:
        self.failures = 0
        self.ejections = 0
        self.until = 0.0


class OutlierDetector(Generic[K]):
    """Consecutive-failure ejection for the endpoints of one service."""

    def __init__(
        self,
        *,
        consecutive: int = 5,
        base_ejection_s: float = 30.0,
        max_ejection_ratio: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        max_ejection_s: float = 300.0,
    ) -> None:
        if consecutive < 1 or base_ejection_s <= 0 or not 0 <= max_ejection_ratio <= 1:
            raise ValueError(
                "consecutive must be >= 1, base_ejection_s > 0, max_ejection_ratio in [0, 1]"
            )
        self._threshold = consecutive
        self._base = base_ejection_s
        self._ratio = max_ejection_ratio
        self._max = max(max_ejection_s, base_ejection_s)
        self._clock = clock
        self._records: dict[K, _Record] = {}
        # key -> ejected until; may hold expired entries. Public so a balancer's hot path can skip
        # ejected() with one truth test while nobody is ejected.
        self.active: dict[K, float] = {}

    def record(self, key: K, ok: bool, pool: Collection[K]) -> bool:
        """Count one outcome for ``key`` (a member of ``pool``); True if it got ejected now."""
        rec = self._records.get(key)
        if ok:
            if rec is not None:
                rec.failures = 0
            return False
        if rec is None:
            rec = self._records[key] = _Record()
        now = self._clock()
        if rec.until > now:
            return False  # a request sent before the ejection: not part of the next run
        rec.failures += 1
        if rec.failures < self._threshold:
            return False
        if len(self.ejected(pool)) >= self._allowed(len(pool)):
            return False  # no room: the run continues and may eject once there is
        duration = self._base * (2 ** min(rec.ejections, 30))
        rec.until = now + min(duration, self._max)
        rec.ejections += 1
        rec.failures = 0
        self.active[key] = rec.until
        return True

    def ejected(self, pool: Collection[K]) -> set[K]:
        """The members of ``pool`` ejected now (never more than the ratio allows)."""
        if not self.active:
            return set()
        now = self._clock()
        expired = [k for k, until in self.active.items() if until <= now]
        for key in expired:
            del self.active[key]
        out = [(until, k) for k, until in self.active.items() if k in pool]
        allowed = self._allowed(len(pool))
        if len(out) > allowed:
            out.sort(key=lambda item: item[0], reverse=True)  # keep the longest ejections
            del out[allowed:]
        return {k for _, k in out}

    def retain(self, keys: Collection[K]) -> None:
        """Forget endpoints not in ``keys`` (call when discovery removes endpoints)."""
        for store in (self._records, self.active):
            for key in [k for k in store if k not in keys]:
                del store[key]

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per-endpoint failure run, ejection count and seconds left ejected (/config_dump)."""
        now = self._clock()
        return {
            endpoint_label(k): {
                "consecutive_failures": float(r.failures),
                "ejections": float(r.ejections),
                "ejected_for_s": round(max(r.until - now, 0.0), 3),
            }
            for k, r in self._records.items()
        }

    def _allowed(self, size: int) -> int:
        return max(min(int(self._ratio * size + 1e-9), size - 1), 0)
