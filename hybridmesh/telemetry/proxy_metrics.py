"""The proxy's Prometheus metrics: Linkerd metric names, Istio label names.

One ``ProxyMetrics`` per proxy process, each with its own ``CollectorRegistry`` so that two
proxies (or a proxy and a test) in one interpreter never share counters. ``request()`` runs once
per request on the proxy's hot path: prometheus-client's ``.labels()`` builds and validates a
label tuple and takes a lock on every call, so the labelled children are cached in plain dicts
keyed by the caller's own argument tuple; a cache hit costs one tuple hash and the child updates.

Label values are the strings the scraper (``hybridmesh.telemetry.scrape``) groups by, so this
module also names them: ``reporter`` is ``source`` on outbound and ``destination`` on inbound;
identities the proxy does not know are ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from hybridmesh.telemetry._exposition import TextRenderer
from hybridmesh.telemetry.access_log import AccessLog

__all__ = [
    "LATENCY_BUCKETS_MS",
    "REPORTER_DESTINATION",
    "REPORTER_SOURCE",
    "UNKNOWN",
    "AccessLog",
    "Peer",
    "ProxyMetrics",
]

UNKNOWN: Final = "unknown"
REPORTER_SOURCE: Final = "source"
REPORTER_DESTINATION: Final = "destination"

LATENCY_BUCKETS_MS: Final = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
    1000.0, 2500.0, 5000.0, 10000.0, 30000.0, float("inf"),
)  # fmt: skip
"""Sub-millisecond proxy hops up to a 30 s timeout; quantiles interpolate within a bucket."""

_PEER_LABELS = ("workload", "workload_namespace", "principal")
_EDGE_LABELS: Final = (
    "reporter",
    *(f"source_{x}" for x in _PEER_LABELS),
    *(f"destination_{x}" for x in _PEER_LABELS),
    "destination_service",
)
LATENCY_LABELS: Final = (*_EDGE_LABELS, "request_protocol", "response_code", "grpc_response_status")
REQUEST_LABELS: Final = (*LATENCY_LABELS, "response_flags")
TCP_LABELS: Final = _EDGE_LABELS


@dataclass(frozen=True, slots=True)
class Peer:
    """One side of a request: workload, its namespace and its SPIFFE principal.

    Each field is ``"unknown"`` when the proxy cannot tell (an unmeshed caller, a plain-text
    peer without a certificate). Proxies should reuse Peer objects (one per endpoint from the
    discovery tables, one for the local pod): equal-by-identity keys make cache hits cheapest.
    """

    workload: str
    namespace: str
    principal: str

    @classmethod
    def unknown(cls) -> Peer:
        return _UNKNOWN_PEER

    def labels(self) -> tuple[str, str, str]:
        return (self.workload, self.namespace, self.principal)


_UNKNOWN_PEER = Peer(UNKNOWN, UNKNOWN, UNKNOWN)

_EdgeKey = tuple[str, Peer, Peer, str]
_RequestKey = tuple[str, Peer, Peer, str, str, int, str, str]


class _RequestChildren:
    """The counter and histogram children that one request label tuple updates."""

    __slots__ = ("count", "latency")

    def __init__(self, count: Counter, latency: Histogram) -> None:
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

    Not thread-safe by design beyond what prometheus-client gives: a proxy worker is one
    asyncio thread; each worker process has its own instance.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._requests: dict[_RequestKey, _RequestChildren] = {}
        self._tcp: dict[_EdgeKey, _TcpChildren] = {}
        self._retries: dict[str, Counter] = {}
        self._exhausted: dict[str, Counter] = {}
        self._ejections: dict[str, Counter] = {}
        self._errors: dict[str, Counter] = {}
        self._make_metrics()
        self._renderer = TextRenderer(self.registry)

    def _make_metrics(self) -> None:
        reg = self.registry
        self.request_total = Counter(
            "request_total", "Requests handled, by edge and outcome.", REQUEST_LABELS, registry=reg
        )
        self.response_latency_ms = Histogram(
            "response_latency_ms",
            "Time from the request's first byte to the response's last, in milliseconds.",
            LATENCY_LABELS,
            registry=reg,
            buckets=LATENCY_BUCKETS_MS,
        )
        self.tcp_open_total = Counter(
            "tcp_open_total", "TCP connections opened.", TCP_LABELS, registry=reg
        )
        self.tcp_close_total = Counter(
            "tcp_close_total", "TCP connections closed.", TCP_LABELS, registry=reg
        )
        self.tcp_read_bytes_total = Counter(
            "tcp_read_bytes_total", "Bytes read from the peer, counted at close.", TCP_LABELS,
            registry=reg,
        )  # fmt: skip
        self.tcp_write_bytes_total = Counter(
            "tcp_write_bytes_total", "Bytes written to the peer, counted at close.", TCP_LABELS,
            registry=reg,
        )  # fmt: skip
        svc = ("destination_service",)
        self.retry_total = Counter("retry_total", "Retries sent.", svc, registry=reg)
        self.retry_budget_exhausted_total = Counter(
            "retry_budget_exhausted_total",
            "Retries not sent because the retry budget was exhausted.",
            svc,
            registry=reg,
        )
        self.outlier_ejections_total = Counter(
            "outlier_ejections_total", "Endpoints ejected by outlier detection.", svc, registry=reg
        )
        self.proxy_errors_total = Counter(
            "proxy_errors_total",
            "Error responses the proxy produced itself, by reason.",
            ("reason",),
            registry=reg,
        )

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
        key = (reporter, source, destination, service, protocol, status, grpc_status, flags)
        children = self._requests.get(key)
        if children is None:
            children = self._request_children(key)
        children.count.inc()
        children.latency.observe(latency_s * 1000.0)

    def _request_children(self, key: _RequestKey) -> _RequestChildren:
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

        Without prometheus-client's ``*_created`` series: they would double the size of every
        counter on the wire, Linkerd does not export them, and turning them off with
        ``disable_created_metrics()`` would change a process-wide global. Rendered by
        ``TextRenderer`` (cached label strings), ~4x faster than ``generate_latest``: the proxy
        serves this from its event loop.
        """
        return self._renderer.render()


def _child(cache: dict[str, Counter], family: Counter, value: str) -> Counter:
    child = cache.get(value)
    if child is None:
        child = cache[value] = family.labels(value)
    return child
