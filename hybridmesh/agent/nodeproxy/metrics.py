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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hybridmesh.telemetry._exposition import CounterChild, CounterFamily, render_families
from hybridmesh.telemetry.proxy_metrics import UNKNOWN, Peer, ProxyMetrics

__all__ = ["NodeProxyMetrics"]


class NodeProxyMetrics:
    def __init__(self) -> None:
        self.proxy = ProxyMetrics()
        self.refused_total = CounterFamily(
            "nodeproxy_refused_total", "Connections or tunnel streams the node proxy refused.",
            ("reason", "source_workload", "source_workload_namespace"))
        self._refused: dict[tuple[str, str, str], CounterChild] = {}
        self.gauges: Callable[[], tuple[Mapping[str, int], int]] = lambda: ({}, 0)

    def refuse(self, reason: str, source: Peer | None = None) -> None:
        peer = source or Peer.unknown()
        key = (reason, peer.workload, peer.namespace)
        child = self._refused.get(key)
        if child is None:
            child = self._refused[key] = self.refused_total.labels(*key)
        child.inc()

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
        return (self.proxy.exposition() + render_families((self.refused_total,))
                + "\n".join(lines).encode())
