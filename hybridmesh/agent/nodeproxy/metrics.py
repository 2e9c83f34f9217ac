"""The node proxy's metrics: the sidecar's names per source/destination workload, plus refusals.

``tcp_open_total``, ``tcp_close_total``, ``tcp_read_bytes_total``, ``tcp_write_bytes_total``
are the sidecar's (``telemetry.proxy_metrics``) with the same labels, so ``hybridmesh stat``
reads both placements alike; ``reporter`` is ``source`` on the pod's outbound side and
``destination`` where the tunnel (or a same-node connection) reaches the destination pod, and
``source_principal`` is the *verified* SPIFFE ID. What a shared proxy adds, per source workload
(the isolation critique wants it visible who is being refused and why):

- ``nodeproxy_refused_total{reason, source_workload, source_workload_namespace}``:
  unresolved-source, connection-limit, connection-rate, stream-limit, policy, no-identity,
  not-local, tunnel-*, connect-failed, draining;
- gauges ``nodeproxy_active_connections{source_workload, source_workload_namespace}`` and
  ``nodeproxy_svids`` (identities held).

The node proxy is L4 (no requests to count), so ``hybridmesh stat`` reads its golden signals
from connection attempts, per edge (the TCP labels, ``reporter`` included):

- ``tcp_connect_total{..., outcome="ok"|"failed"}``: every connection (or tunnel stream) the
  proxy tried to carry once its source was known — refused by policy/limits or unreachable
  counts as failed;
- ``tcp_connect_latency_ms``: from accepting it to the upstream being ready (or the refusal):
  what the mesh adds before the first byte flows.

A same-node connection has one proxy on its edge, which reports it as both ends, as Istio's
two proxies would: every series of it (attempts, latency, opens, closes, bytes) is counted
once under ``reporter="source"`` and once under ``reporter="destination"``. ``hybridmesh stat``
reads one reporter per view (``--from``: source; ``--to`` and the workload view: destination),
so each edge shows once, same-node or across nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from hybridmesh.telemetry._exposition import (
    CounterChild,
    CounterFamily,
    HistogramChild,
    HistogramFamily,
    render_families,
)
from hybridmesh.telemetry.proxy_metrics import (
    LATENCY_BUCKETS_MS,
    TCP_LABELS,
    UNKNOWN,
    Peer,
    ProxyMetrics,
)

__all__ = ["CONNECT_LATENCY", "CONNECT_TOTAL", "NodeProxyMetrics"]

CONNECT_TOTAL: Final = "tcp_connect_total"
CONNECT_LATENCY: Final = "tcp_connect_latency_ms"
_Edge = tuple[str, Peer, Peer, str]


class NodeProxyMetrics:
    def __init__(self) -> None:
        self.proxy = ProxyMetrics()
        self.refused_total = CounterFamily(
            "nodeproxy_refused_total", "Connections or tunnel streams the node proxy refused.",
            ("reason", "source_workload", "source_workload_namespace"))
        self._refused: dict[tuple[str, str, str], CounterChild] = {}
        self.connect_total = CounterFamily(
            CONNECT_TOTAL, "Connections (or tunnel streams) carried for a workload, by outcome.",
            (*TCP_LABELS, "outcome"))
        self.connect_latency_ms = HistogramFamily(
            CONNECT_LATENCY, "Time from accepting a connection to its upstream being ready (or "
            "its refusal), in milliseconds.", TCP_LABELS, buckets=LATENCY_BUCKETS_MS)
        self._connects: dict[tuple[_Edge, bool], tuple[CounterChild, HistogramChild]] = {}
        self.gauges: Callable[[], tuple[Mapping[str, int], int]] = lambda: ({}, 0)

    def refuse(self, reason: str, source: Peer | None = None) -> None:
        peer = source or Peer.unknown()
        key = (reason, peer.workload, peer.namespace)
        child = self._refused.get(key)
        if child is None:
            child = self._refused[key] = self.refused_total.labels(*key)
        child.inc()

    def connect(self, edge: _Edge, *, ok: bool, elapsed_s: float) -> None:
        """One attempt on ``edge`` = (reporter, source, destination, service) ended."""
        children = self._connects.get((edge, ok))
        if children is None:
            reporter, source, destination, service = edge
            labels = (reporter, *source.labels(), *destination.labels(), service)
            children = self._connects[(edge, ok)] = (
                self.connect_total.labels(*labels, "ok" if ok else "failed"),
                self.connect_latency_ms.labels(*labels))
        children[0].inc()
        children[1].observe(elapsed_s * 1000.0)

    def connects(self, outcome: str) -> float:
        """Total attempts with ``outcome`` (tests)."""
        return sum(c.value for (_e, ok), (c, _h) in self._connects.items()
                   if ("ok" if ok else "failed") == outcome)

    def refused(self, reason: str) -> float:
        """Total refusals for ``reason`` (tests)."""
        return sum(c.value for k, c in self._refused.items() if k[0] == reason)

    def exposition(self) -> bytes:
        active, svids = self.gauges()
        lines = ["# HELP nodeproxy_active_connections Open connections per source workload.",
                 "# TYPE nodeproxy_active_connections gauge"]
        for key, count in sorted(active.items()):
            namespace, _, workload = key.partition("/")
            lines.append(f'nodeproxy_active_connections{{source_workload="{workload or UNKNOWN}"'
                         f',source_workload_namespace="{namespace}"}} {count}.0')
        lines += ["# HELP nodeproxy_svids Workload identities this node proxy holds.",
                  "# TYPE nodeproxy_svids gauge", f"nodeproxy_svids {svids}.0", ""]
        families = (self.refused_total, self.connect_total, self.connect_latency_ms)
        return (self.proxy.exposition() + render_families(families)
                + "\n".join(lines).encode())
