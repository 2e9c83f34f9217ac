"""The proxy's Prometheus metrics: Linkerd metric names, Istio label names.

One ``ProxyMetrics`` per proxy process, each with its own series, so two proxies (or a proxy
and a test) in one interpreter never share counters. ``request()`` runs once per request on
the proxy's hot path, so the series it updates are cached in a plain dict keyed by the
caller's own argument tuple: a cache hit costs one tuple hash and two in-place updates.

The series are the plain counters and histograms of ``_exposition`` (no prometheus-client in
the proxy process: it costs memory and a lock per update; the exposition text is the same
bytes). A caller that wants them in a prometheus-client ``CollectorRegistry`` passes one, and
they are registered there as a collector.

Label values are the strings the scraper (``hybridmesh.telemetry.scrape``) groups by, so this
module also names them: ``reporter`` is ``source`` on outbound and ``destination`` on inbound;
identities the proxy does not know are ``unknown``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Final, NamedTuple

from hybridmesh.telemetry._exposition import (
    CounterChild,
    CounterFamily,
    HistogramChild,
    HistogramFamily,
    prometheus_collector,
    render_families,
)
from hybridmesh.telemetry.access_log import AccessLog

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "LATENCY_BUCKETS_MS",
    "REPORTER_DESTINATION",
    "REPORTER_SOURCE",
    "UNKNOWN",
    "AccessLog",
    "Peer",
    "ProxyMetrics",
    "RequestKey",
]

UNKNOWN: Final = "unknown"
REPORTER_SOURCE: Final = "source"
REPORTER_DESTINATION: Final = "destination"

LATENCY_BUCKETS_MS: Final[tuple[float, ...]] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
    1000.0, 2500.0, 5000.0, 10000.0, 30000.0, float("inf"),
)  # fmt: skip
"""Sub-millisecond proxy hops up to a 30 s timeout; quantiles interpolate within a bucket.
(The explicit tuple types: mypyc leaves an inferred-type Final tuple holding a call unset.)"""

_PEER_LABELS = ("workload", "workload_namespace", "principal")
_EDGE_LABELS: Final[tuple[str, ...]] = (
    "reporter",
    *(f"source_{x}" for x in _PEER_LABELS),
    *(f"destination_{x}" for x in _PEER_LABELS),
    "destination_service",
)
LATENCY_LABELS: Final[tuple[str, ...]] = (
    *_EDGE_LABELS, "request_protocol", "response_code", "grpc_response_status"
)
REQUEST_LABELS: Final[tuple[str, ...]] = (*LATENCY_LABELS, "response_flags")
TCP_LABELS: Final = _EDGE_LABELS


class Peer(NamedTuple):
    """One side of a request: workload, its namespace and its SPIFFE principal.

    Each field is ``"unknown"`` when the proxy cannot tell (an unmeshed caller, a plain-text
    peer without a certificate). Proxies should reuse Peer objects (one per endpoint from the
    discovery tables, one for the local pod): equal-by-identity keys make cache hits cheapest.
    A tuple, not a frozen dataclass: two Peers sit in the key of every request's metrics
    lookup, and a tuple hashes in C where a dataclass runs a Python ``__hash__`` each time.
    """

    workload: str
    namespace: str
    principal: str

    @classmethod
    def unknown(cls) -> Peer:
        return _UNKNOWN_PEER

    def labels(self) -> tuple[str, str, str]:
        return (self[0], self[1], self[2])


_UNKNOWN_PEER = Peer(UNKNOWN, UNKNOWN, UNKNOWN)
_INF = float("inf")

_EdgeKey = tuple[str, Peer, Peer, str]
RequestKey = tuple[str, Peer, Peer, str, str, int, str, str]
"""(reporter, source, destination, service, protocol, status, grpc_status, flags): the
arguments of :meth:`ProxyMetrics.request` as one tuple, for :meth:`ProxyMetrics.record`."""


class _RequestChildren:
    """The counter and histogram series that one request label tuple updates."""

    __slots__ = ("count", "latency")

    def __init__(self, count: CounterChild, latency: HistogramChild) -> None:
        self.count = count
        self.latency = latency


class _TcpChildren:
    __slots__ = ("close", "open", "read", "write")

    def __init__(self, metrics: ProxyMetrics, labels: tuple[str, ...]) -> None:
        self.open = metrics.tcp_open_total.labels(*labels)
        self.close = metrics.tcp_close_total.labels(*labels)
        self.read = metrics.tcp_read_bytes_total.labels(*labels)
        self.write = metrics.tcp_write_bytes_total.labels(*labels)


def _edge_labels(reporter: str, source: Peer, destination: Peer, service: str) -> tuple[str, ...]:
    return (reporter, *source.labels(), *destination.labels(), service)


class ProxyMetrics:
    """Every metric one proxy process exports on ``:15020/metrics``.

    Not thread-safe: a proxy worker is one asyncio thread; each worker process has its own
    instance. ``registry``: also expose the series through that prometheus-client registry.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self._requests: dict[RequestKey, _RequestChildren] = {}
        self._tcp: dict[_EdgeKey, _TcpChildren] = {}
        self._retries: dict[str, CounterChild] = {}
        self._exhausted: dict[str, CounterChild] = {}
        self._ejections: dict[str, CounterChild] = {}
        self._errors: dict[str, CounterChild] = {}
        self._families = self._make_metrics()
        if registry is not None:
            registry.register(prometheus_collector(self._families))

    def _make_metrics(self) -> tuple[CounterFamily | HistogramFamily, ...]:
        self.request_total = CounterFamily(
            "request_total", "Requests handled, by edge and outcome.", REQUEST_LABELS
        )
        self.response_latency_ms = HistogramFamily(
            "response_latency_ms",
            "Time from the request's first byte to the response's last, in milliseconds.",
            LATENCY_LABELS,
            buckets=LATENCY_BUCKETS_MS,
        )
        self.tcp_open_total = CounterFamily("tcp_open_total", "TCP connections opened.",
                                            TCP_LABELS)
        self.tcp_close_total = CounterFamily("tcp_close_total", "TCP connections closed.",
                                             TCP_LABELS)
        self.tcp_read_bytes_total = CounterFamily(
            "tcp_read_bytes_total", "Bytes read from the peer, counted at close.", TCP_LABELS
        )
        self.tcp_write_bytes_total = CounterFamily(
            "tcp_write_bytes_total", "Bytes written to the peer, counted at close.", TCP_LABELS
        )
        svc = ("destination_service",)
        self.retry_total = CounterFamily("retry_total", "Retries sent.", svc)
        self.retry_budget_exhausted_total = CounterFamily(
            "retry_budget_exhausted_total",
            "Retries not sent because the retry budget was exhausted.",
            svc,
        )
        self.outlier_ejections_total = CounterFamily(
            "outlier_ejections_total", "Endpoints ejected by outlier detection.", svc
        )
        self.proxy_errors_total = CounterFamily(
            "proxy_errors_total", "Error responses the proxy produced itself, by reason.",
            ("reason",),
        )  # fmt: skip
        return (self.request_total, self.response_latency_ms, self.tcp_open_total,
                self.tcp_close_total, self.tcp_read_bytes_total, self.tcp_write_bytes_total,
                self.retry_total, self.retry_budget_exhausted_total,
                self.outlier_ejections_total, self.proxy_errors_total)  # fmt: skip

    # -- hot path ------------------------------------------------------------------------
    def request(
        self,
        *,
        reporter: str,
        source: Peer,
        destination: Peer,
        service: str,
        protocol: str,
        status: int,
        grpc_status: str,
        flags: str,
        latency_s: float,
    ) -> None:
        """Count one finished request and observe its latency (seconds, exported as ms)."""
        self.record((reporter, source, destination, service, protocol, status, grpc_status,
                     flags), latency_s)

    def record(self, key: RequestKey, latency_s: float) -> None:
        """:meth:`request` with its labels as one tuple: the proxy's per-request call (no
        keyword binding; the tuple is the cache key as is)."""
        children = self._requests.get(key)
        if children is None:
            children = self._request_children(key)
        children.count.value += 1.0
        latency = children.latency
        ms = latency_s * 1000.0
        latency.sum += ms
        if ms <= _INF:  # NaN lands in no bucket (as with prometheus-client)
            latency.counts[bisect_left(latency.bounds, ms)] += 1

    def _request_children(self, key: RequestKey) -> _RequestChildren:
        reporter, source, destination, service, protocol, status, grpc_status, flags = key
        base = (*_edge_labels(reporter, source, destination, service), protocol, str(status))
        children = _RequestChildren(
            self.request_total.labels(*base, grpc_status, flags),
            self.response_latency_ms.labels(*base, grpc_status),
        )
        self._requests[key] = children
        return children

    def _tcp_children(
        self, reporter: str, source: Peer, destination: Peer, service: str
    ) -> _TcpChildren:
        key = (reporter, source, destination, service)
        children = self._tcp.get(key)
        if children is None:
            labels = _edge_labels(reporter, source, destination, service)
            children = self._tcp[key] = _TcpChildren(self, labels)
        return children

    def tcp_open(self, *, reporter: str, source: Peer, destination: Peer, service: str) -> None:
        self._tcp_children(reporter, source, destination, service).open.inc()

    def tcp_close(
        self,
        *,
        reporter: str,
        source: Peer,
        destination: Peer,
        service: str,
        read_bytes: int,
        write_bytes: int,
    ) -> None:
        """Count a closed connection and its bytes (both directions, from the proxy's side)."""
        children = self._tcp_children(reporter, source, destination, service)
        children.close.inc()
        if read_bytes:
            children.read.inc(read_bytes)
        if write_bytes:
            children.write.inc(write_bytes)

    # -- rarer events ----------------------------------------------------------------------
    def retry(self, service: str, *, exhausted: bool) -> None:
        """A retry was sent (``exhausted=False``) or refused by the retry budget (``True``)."""
        cache, family = (
            (self._exhausted, self.retry_budget_exhausted_total)
            if exhausted
            else (self._retries, self.retry_total)
        )
        _child(cache, family, service).inc()

    def ejection(self, service: str) -> None:
        _child(self._ejections, self.outlier_ejections_total, service).inc()

    def proxy_error(self, reason: str) -> None:
        _child(self._errors, self.proxy_errors_total, reason).inc()

    def exposition(self) -> bytes:
        """Prometheus text exposition (format 0.0.4) of everything above.

        The bytes prometheus-client's ``generate_latest`` would give for the same series,
        without its ``*_created`` series: they would double the size of every counter on the
        wire and Linkerd does not export them. Every series' text left of its value is
        formatted once, so a scrape is mostly joins: the proxy serves this from its event loop.
        """
        return render_families(self._families)


def _child(cache: dict[str, CounterChild], family: CounterFamily, value: str) -> CounterChild:
    child = cache.get(value)
    if child is None:
        child = cache[value] = family.labels(value)
    return child
