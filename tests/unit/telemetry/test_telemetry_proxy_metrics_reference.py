"""ProxyMetrics' own counters render exactly what prometheus-client would (minus *_created).

The reference is prometheus-client itself: the same metric definitions in a fresh
CollectorRegistry, fed the same calls in the same order, rendered by ``generate_latest``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from hybridmesh.telemetry._exposition import CounterFamily, HistogramFamily
from hybridmesh.telemetry.proxy_metrics import (
    LATENCY_BUCKETS_MS,
    LATENCY_LABELS,
    REQUEST_LABELS,
    TCP_LABELS,
    Peer,
    ProxyMetrics,
)

_NAME = re.compile(r"^(?:# (?:HELP|TYPE) )?([a-zA-Z_:][a-zA-Z0-9_:]*)")


def _without_created(text: bytes) -> bytes:
    lines = text.decode().split("\n")
    kept = [ln for ln in lines if not ((m := _NAME.match(ln)) and m.group(1).endswith("_created"))]
    return "\n".join(kept).encode()


class _Reference:
    """ProxyMetrics' metric set, built from prometheus-client primitives."""

    def __init__(self, m: ProxyMetrics) -> None:
        self.registry = CollectorRegistry()
        self.by_name: dict[str, Any] = {}
        for family in m._families:
            if isinstance(family, HistogramFamily):
                metric: Any = Histogram(family.name, family.documentation, family.labelnames,
                                        buckets=LATENCY_BUCKETS_MS, registry=self.registry)
            else:
                assert isinstance(family, CounterFamily)
                metric = Counter(family.name, family.documentation, family.labelnames,
                                 registry=self.registry)
            self.by_name[family.name] = metric

    def request(self, op: tuple[Any, ...]) -> None:
        reporter, src, dst, service, protocol, status, grpc, flags, latency_s = op
        edge = (reporter, *src.labels(), *dst.labels(), service)
        base = (*edge, protocol, str(status), grpc)
        self.by_name["request_total"].labels(*base, flags).inc()
        self.by_name["response_latency_ms"].labels(*base).observe(latency_s * 1000.0)

    def tcp(self, op: tuple[Any, ...]) -> None:
        """As the original ProxyMetrics did: all four series of an edge appear at its first
        event, the byte counters move only when there are bytes."""
        reporter, src, dst, service, read, write = op
        edge = (reporter, *src.labels(), *dst.labels(), service)
        series = [self.by_name[f"tcp_{x}_total"].labels(*edge)
                  for x in ("open", "close", "read_bytes", "write_bytes")]
        series[0].inc()
        series[1].inc()
        if read:
            series[2].inc(read)
        if write:
            series[3].inc(write)


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
_PEERS = st.builds(Peer, _TEXT, _TEXT, _TEXT)
_REQUEST = st.tuples(
    st.sampled_from(["source", "destination"]), _PEERS, _PEERS, _TEXT, st.sampled_from(
        ["http", "grpc"]), st.integers(100, 599), st.sampled_from(["", "0", "14"]),
    st.sampled_from(["-", "UF", "DC"]),
    st.one_of(st.floats(0, 40.0), st.just(math.inf), st.just(1e-9), st.just(0.0005)),
)  # fmt: skip
_TCP = st.tuples(st.sampled_from(["source", "destination"]), _PEERS, _PEERS, _TEXT,
                 st.integers(0, 10**12), st.integers(0, 10**7))
_OTHER = st.tuples(st.sampled_from(["retry", "exhausted", "ejection", "error"]), _TEXT)


@given(st.lists(st.one_of(_REQUEST, _TCP, _OTHER), max_size=30))
@settings(max_examples=150, deadline=None)
def test_exposition_is_generate_latest_minus_created(ops: list[tuple[Any, ...]]) -> None:
    m = ProxyMetrics()
    ref = _Reference(m)
    for op in ops:
        if len(op) == 9:
            reporter, src, dst, svc, proto, status, grpc, flags, latency = op
            m.request(reporter=reporter, source=src, destination=dst, service=svc,
                      protocol=proto, status=status, grpc_status=grpc, flags=flags,
                      latency_s=latency)
            ref.request(op)
        elif len(op) == 6:
            reporter, src, dst, svc, read, write = op
            m.tcp_open(reporter=reporter, source=src, destination=dst, service=svc)
            m.tcp_close(reporter=reporter, source=src, destination=dst, service=svc,
                        read_bytes=read, write_bytes=write)
            ref.tcp(op)
        else:
            _other(m, ref, *op)
    assert m.exposition() == _without_created(generate_latest(ref.registry))


def _other(m: ProxyMetrics, ref: _Reference, kind: str, value: str) -> None:
    if kind == "retry":
        m.retry(value, exhausted=False)
        ref.by_name["retry_total"].labels(value).inc()
    elif kind == "exhausted":
        m.retry(value, exhausted=True)
        ref.by_name["retry_budget_exhausted_total"].labels(value).inc()
    elif kind == "ejection":
        m.ejection(value)
        ref.by_name["outlier_ejections_total"].labels(value).inc()
    else:
        m.proxy_error(value)
        ref.by_name["proxy_errors_total"].labels(value).inc()


def test_a_given_registry_sees_the_same_series() -> None:
    registry = CollectorRegistry()
    m = ProxyMetrics(registry)
    peer = Peer("web", "shop", "unknown")
    for status, latency in ((200, 0.0004), (200, 0.02), (503, 1.5)):
        m.request(reporter="source", source=peer, destination=peer, service="web",
                  protocol="http", status=status, grpc_status="", flags="-", latency_s=latency)
    m.tcp_close(reporter="source", source=peer, destination=peer, service="web",
                read_bytes=10, write_bytes=0)
    m.proxy_error("timeout")
    assert _without_created(generate_latest(registry)) == m.exposition()


def test_label_and_bucket_validation_as_prometheus_client() -> None:
    m = ProxyMetrics()
    try:
        m.request_total.labels("too", "few")
    except ValueError as exc:
        assert "label values" in str(exc)
    else:
        raise AssertionError("wrong label count accepted")
    try:
        m.retry_total.labels("svc").inc(-1)
    except ValueError:
        pass
    else:
        raise AssertionError("negative increment accepted")
    try:
        HistogramFamily("h", "doc", (), buckets=(2.0, 1.0))
    except ValueError:
        pass
    else:
        raise AssertionError("unsorted buckets accepted")
    assert set(REQUEST_LABELS) - set(LATENCY_LABELS) == {"response_flags"}
    assert TCP_LABELS[0] == "reporter"
