"""From proxies' Prometheus text to per-workload golden signals (pure functions, no I/O).

The pipeline is what Prometheus itself does for ``rate()`` and ``histogram_quantile()``, over
exactly two scrapes: ``parse`` each pod's exposition, ``delta`` the two scrapes of one pod
(a counter that went down means the proxy restarted: the new value is the increase, as
``rate()`` treats resets), ``merge`` the per-pod windows, then ``group_stats`` by the labels
that name a workload or an edge. Deltas are taken per pod *before* merging so one proxy's
restart cannot hide behind another's growth.

Views, as in Linkerd: a workload's own (inbound) figures come from series its proxies report
with ``reporter="destination"``; edges come from the caller's proxies, ``reporter="source"``,
which also covers destinations that run no proxy.

L4 proxies (the ``node`` placement's node proxies) have no requests to count: their golden
signals are per *connection* — ``tcp_connect_total{outcome}`` (failed = refused by policy or
limits, or unreachable) and ``tcp_connect_latency_ms`` (time to a ready upstream).
:func:`connection_stats` reads them into the same :class:`TrafficStats`, ``unit`` telling
which it is; a group with request series keeps those.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "DESTINATION_KEYS",
    "EDGE_KEYS",
    "SOURCE_KEYS",
    "UNIT_CONNECTIONS",
    "UNIT_REQUESTS",
    "Labels",
    "Samples",
    "ScrapeError",
    "SeriesKey",
    "TrafficStats",
    "connection_stats",
    "delta",
    "edge_stats",
    "group_stats",
    "histogram_quantile",
    "is_failure",
    "merge",
    "open_connections",
    "parse",
    "workload_stats",
]

Labels = tuple[tuple[str, str], ...]
"""A series' labels as sorted (name, value) pairs: hashable, order-independent."""
SeriesKey = tuple[str, Labels]
Samples = dict[SeriesKey, float]

REQUESTS: Final = "request_total"
LATENCY_BUCKET: Final = "response_latency_ms_bucket"
TCP_OPEN: Final = "tcp_open_total"
TCP_CLOSE: Final = "tcp_close_total"
CONNECTS: Final = "tcp_connect_total"
CONNECT_LATENCY_BUCKET: Final = "tcp_connect_latency_ms_bucket"
UNIT_REQUESTS: Final = "requests"
UNIT_CONNECTIONS: Final = "connections"

DESTINATION_KEYS: Final = ("destination_workload_namespace", "destination_workload")
SOURCE_KEYS: Final = ("source_workload_namespace", "source_workload")
EDGE_KEYS: Final = (*SOURCE_KEYS, *DESTINATION_KEYS)


class ScrapeError(ValueError):
    """The scraped text is not Prometheus text exposition."""


@dataclass(frozen=True, slots=True)
class TrafficStats:
    """Golden signals of one group (a workload or an edge) over one window."""

    requests: float
    failures: float
    window_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    unit: str = UNIT_REQUESTS  # or UNIT_CONNECTIONS: an L4 proxy's attempts

    @property
    def success_rate(self) -> float | None:
        """Non-failures over total; None without traffic (unknown, not 0% or 100%)."""
        return (self.requests - self.failures) / self.requests if self.requests > 0 else None

    @property
    def rps(self) -> float:
        return self.requests / self.window_s if self.window_s > 0 else 0.0


def parse(text: str) -> Samples:
    """Every sample of ``text`` (Prometheus text format), ``*_created`` series left out."""
    samples: Samples = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_created") or math.isnan(sample.value):
                    continue
                labels = tuple(sorted(sample.labels.items()))
                samples[(sample.name, labels)] = float(sample.value)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ScrapeError(f"not Prometheus text exposition: {exc}") from exc
    return samples


def delta(before: Mapping[SeriesKey, float], after: Mapping[SeriesKey, float]) -> Samples:
    """Increase of every series of ``after`` since ``before`` (one pod's two scrapes).

    A series new in ``after`` started from zero inside the window; a decrease is a restart,
    so the whole new value is the increase. Series that vanished contribute nothing.
    """
    out: Samples = {}
    for key, value in after.items():
        old = before.get(key, 0.0)
        out[key] = value - old if value >= old else value
    return out


def merge(scrapes: Iterable[Mapping[SeriesKey, float]]) -> Samples:
    """Sum of several pods' samples, series by series."""
    out: Samples = defaultdict(float)
    for samples in scrapes:
        for key, value in samples.items():
            out[key] += value
    return dict(out)


def is_failure(labels: Mapping[str, str]) -> bool:
    """Linkerd's classification: 5xx (or no response at all), or a non-OK gRPC status."""
    code = labels.get("response_code", "")
    if not code.isdigit() or int(code) >= 500 or int(code) == 0:
        return True
    if labels.get("request_protocol") == "grpc":
        return labels.get("grpc_response_status", "0") not in ("", "0")
    return False


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """PromQL's ``histogram_quantile``: linear interpolation inside the bucket holding rank q.

    ``buckets`` are (upper bound, cumulative count) pairs including ``+Inf``. None when there
    are no observations (PromQL's NaN). A rank in the +Inf bucket returns the highest finite
    bound; the first bucket's lower bound is 0.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], not {q}")
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]) or ordered[-1][1] <= 0:
        return None
    cumulative = _monotonic([count for _bound, count in ordered])
    rank = q * cumulative[-1]
    b = next(i for i, count in enumerate(cumulative) if count >= rank)
    if b == len(ordered) - 1:
        return ordered[-2][0]
    upper = ordered[b][0]
    if b == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if b == 0 else (ordered[b - 1][0], cumulative[b - 1])
    in_bucket = cumulative[b] - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def _monotonic(counts: list[float]) -> list[float]:
    """Scrapes are not atomic: a bucket may read lower than the one below it. PromQL fixes
    that the same way, by carrying the running maximum."""
    out: list[float] = []
    highest = 0.0
    for count in counts:
        highest = max(highest, count)
        out.append(highest)
    return out


def _select(
    samples: Mapping[SeriesKey, float],
    name: str,
    reporter: str,
    where: Mapping[str, str],
) -> Iterable[tuple[dict[str, str], float]]:
    for (sample_name, labels), value in samples.items():
        if sample_name != name:
            continue
        found = dict(labels)
        if found.get("reporter") != reporter:
            continue
        if all(found.get(k) == v for k, v in where.items()):
            yield found, value


def group_stats(
    window: Mapping[SeriesKey, float],
    window_s: float,
    *,
    reporter: str,
    by: Sequence[str],
    where: Mapping[str, str] | None = None,
) -> dict[tuple[str, ...], TrafficStats]:
    """Golden signals of a window (``delta``/``merge`` output) grouped by the ``by`` labels.

    Only series with this ``reporter`` and matching every ``where`` label count.
    """
    query = _Query(window, window_s, reporter, by, where or {})
    return query.stats(REQUESTS, LATENCY_BUCKET, is_failure, UNIT_REQUESTS)


def connection_stats(
    window: Mapping[SeriesKey, float],
    window_s: float,
    *,
    reporter: str,
    by: Sequence[str],
    where: Mapping[str, str] | None = None,
) -> dict[tuple[str, ...], TrafficStats]:
    """:func:`group_stats` for L4 proxies: connection attempts instead of requests."""
    query = _Query(window, window_s, reporter, by, where or {})
    return query.stats(CONNECTS, CONNECT_LATENCY_BUCKET,
                       lambda labels: labels.get("outcome") != "ok", UNIT_CONNECTIONS)


@dataclass(frozen=True, slots=True)
class _Query:
    window: Mapping[SeriesKey, float]
    window_s: float
    reporter: str
    by: Sequence[str]
    where: Mapping[str, str]

    def stats(self, counter: str, bucket: str, failed: Callable[[Mapping[str, str]], bool],
              unit: str) -> dict[tuple[str, ...], TrafficStats]:
        """Counts (and failures) of ``counter`` and quantiles of ``bucket``, per group."""
        totals: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for labels, value in _select(self.window, counter, self.reporter, self.where):
            entry = totals[tuple(labels.get(k, "") for k in self.by)]
            entry[0] += value
            if failed(labels):
                entry[1] += value
        buckets: dict[tuple[str, ...], dict[float, float]] = defaultdict(
            lambda: defaultdict(float))
        for labels, value in _select(self.window, bucket, self.reporter, self.where):
            group = tuple(labels.get(k, "") for k in self.by)
            buckets[group][_bound(labels.get("le", ""))] += value
        return {
            group: _stats(requests, failures, self.window_s,
                          list(buckets.get(group, {}).items()), unit)
            for group, (requests, failures) in totals.items()
        }


def _bound(le: str) -> float:
    try:
        return float(le)
    except ValueError:
        return math.nan


def _stats(
    requests: float, failures: float, window_s: float, buckets: list[tuple[float, float]],
    unit: str,
) -> TrafficStats:
    finite = [(b, c) for b, c in buckets if not math.isnan(b)]
    p50, p95, p99 = (histogram_quantile(q, finite) for q in (0.5, 0.95, 0.99))
    return TrafficStats(requests, failures, window_s, p50, p95, p99, unit)


def open_connections(
    current: Mapping[SeriesKey, float],
    *,
    reporter: str,
    by: Sequence[str],
    where: Mapping[str, str] | None = None,
) -> dict[tuple[str, ...], int]:
    """Connections open now (opened − closed totals of the latest scrape), per group."""
    where = where or {}
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for name, sign in ((TCP_OPEN, 1.0), (TCP_CLOSE, -1.0)):
        for labels, value in _select(current, name, reporter, where):
            out[tuple(labels.get(k, "") for k in by)] += sign * value
    return {group: max(0, round(value)) for group, value in out.items()}


def workload_stats(
    window: Mapping[SeriesKey, float], window_s: float
) -> dict[tuple[str, ...], TrafficStats]:
    """Inbound figures per (namespace, workload), as the workload's own proxies saw them."""
    return group_stats(window, window_s, reporter="destination", by=DESTINATION_KEYS)


def edge_stats(
    window: Mapping[SeriesKey, float], window_s: float
) -> dict[tuple[str, ...], TrafficStats]:
    """Figures per (src namespace, src workload, dst namespace, dst workload), caller's view."""
    return group_stats(window, window_s, reporter="source", by=EDGE_KEYS)
