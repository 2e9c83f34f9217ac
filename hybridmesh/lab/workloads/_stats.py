"""Mergeable latency histograms and per-edge counters, cheap enough for every request.

Buckets are log-linear (the HdrHistogram layout): values below 2**(P+1) µs get one bucket
each, above that every power of two is split into 2**P equal sub-buckets. With P = 6 a
bucket's midpoint is within 1/128 (< 0.8 %) of any value in it, from 1 µs to ~71 minutes, in
1 728 buckets. Counts only ever grow, so two snapshots of a long-running process can be
subtracted (:meth:`Histogram.minus`) to get exactly the window between them — which is how
the bench reads the workloads' ``/_hm/stats`` without ever resetting them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_US", "RELATIVE_ERROR", "EdgeStats", "Histogram", "StatsMismatch"]

_P = 6
_EXACT = 1 << (_P + 1)  # values below this have a bucket of their own
MAX_US = (1 << 32) - 1
"""Largest recordable value (µs, ~71 min); larger values are clamped to it."""
RELATIVE_ERROR = 1 / (1 << (_P + 1))
"""Worst-case |reported - true| / true of a percentile, above the exact range."""


def _index(us: int) -> int:
    if us < _EXACT:
        return us
    shift = us.bit_length() - (_P + 1)
    return (shift << _P) + (us >> shift)


def _bounds(index: int) -> tuple[int, int]:
    """[low, high) of the values that land in bucket ``index``."""
    if index < _EXACT:
        return index, index + 1
    shift = (index >> _P) - 1
    top = index - (shift << _P)
    return top << shift, (top + 1) << shift


_BUCKETS = _index(MAX_US) + 1


class StatsMismatch(ValueError):
    """Two snapshots cannot be subtracted: the later one is not a continuation of the earlier
    (the process restarted in between, or the snapshots come from different sources)."""


class Histogram:
    """Counts of latencies in microseconds; ``record`` is a couple of integer operations."""

    __slots__ = ("_counts", "count", "sum_us")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.sum_us = 0

    def record(self, us: float) -> None:
        value = min(max(int(us), 0), MAX_US)
        self._counts[_index(value)] += 1
        self.count += 1
        self.sum_us += value

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile (q in 0..100) in µs, within RELATIVE_ERROR; 0.0 if empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be within 0..100, got {q}")
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(round(q * self.count / 100, 9)))  # 99.9% of 1000 is 999
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                low, high = _bounds(index)
                return float(low) if high - low == 1 else (low + high - 1) / 2
        raise AssertionError("unreachable: counts sum to count")

    @property
    def mean_us(self) -> float:
        return self.sum_us / self.count if self.count else 0.0

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s observations into this one (combining several sources)."""
        for index, n in enumerate(other._counts):
            if n:
                self._counts[index] += n
        self.count += other.count
        self.sum_us += other.sum_us

    def plus(self, other: Histogram) -> Histogram:
        """A new histogram with the observations of both (``merge`` without mutating)."""
        result = Histogram()
        result.merge(self)
        result.merge(other)
        return result

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations recorded after ``earlier`` was snapshotted from the same source."""
        result = Histogram()
        for index, (now, then) in enumerate(zip(self._counts, earlier._counts, strict=True)):
            if now < then:
                raise StatsMismatch("later histogram has fewer observations than the earlier one")
            result._counts[index] = now - then
        result.count = self.count - earlier.count
        result.sum_us = self.sum_us - earlier.sum_us
        return result

    def to_json(self) -> dict[str, Any]:
        """Sparse and versioned: ``{"v":1,"p":6,"count":..,"sum_us":..,"buckets":[[i,n],..]}``."""
        buckets = [[i, n] for i, n in enumerate(self._counts) if n]
        return {"v": 1, "p": _P, "count": self.count, "sum_us": self.sum_us, "buckets": buckets}

    @classmethod
    def from_json(cls, data: Any) -> Histogram:
        try:
            if data["v"] != 1 or data["p"] != _P:
                raise StatsMismatch(f"unsupported histogram layout v={data['v']} p={data['p']}")
            hist = cls()
            for index, n in data["buckets"]:
                hist._counts[int(index)] += int(n)
            hist.count = int(data["count"])
            hist.sum_us = int(data["sum_us"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, StatsMismatch):
                raise
            raise StatsMismatch(f"not a histogram document: {exc!r}") from None
        if sum(hist._counts) != hist.count:
            raise StatsMismatch("histogram buckets do not add up to its count")
        return hist

    def summary_ms(self) -> dict[str, float]:
        """The usual percentiles in milliseconds, for reports and CLI output."""
        qs = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
        out = {name: round(self.percentile(q) / 1000, 3) for name, q in qs.items()}
        out["mean"] = round(self.mean_us / 1000, 3)
        return out


@dataclass(slots=True)
class EdgeStats:
    """Cumulative outbound statistics for one edge (one destination): requests, errors, latency.

    ``errors`` counts non-2xx answers and transport failures alike: from the caller's side both
    are a failed call.
    """

    requests: int = 0
    errors: int = 0
    latency: Histogram = field(default_factory=Histogram)

    def record(self, us: float, ok: bool) -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
        self.latency.record(us)

    def minus(self, earlier: EdgeStats) -> EdgeStats:
        if self.requests < earlier.requests or self.errors < earlier.errors:
            raise StatsMismatch("later edge stats have fewer requests than the earlier ones")
        return EdgeStats(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            self.latency.minus(earlier.latency),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "histogram": self.latency.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> EdgeStats:
        try:
            return cls(
                int(data["requests"]), int(data["errors"]), Histogram.from_json(data["histogram"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, StatsMismatch):
                raise
            raise StatsMismatch(f"not an edge stats document: {exc!r}") from None
