"""What a proxy says it carried, in one shape for every kind of proxy (pure).

Each side of a run (client pod, server pod) reports ``{"http": requests, "tcp": connections}``
from its proxy's own counters: Envoy's admin ``/stats`` (outbound listener on the client,
inbound on the server) or hybridmesh's ``/metrics`` (``request_total`` / ``tcp_open_total``
with ``reporter="source"`` on the client, ``"destination"`` on the server, Istio's habit).
:func:`proxy_checks` turns two such readings into the share of the run the proxy saw.
"""

from __future__ import annotations

from collections.abc import Mapping

from hybridmesh.telemetry.scrape import parse

__all__ = ["envoy_counts", "proxy_checks", "sidecar_counts"]

_ENVOY = {
    "client": {
        "http": "http.outbound_http.downstream_rq_total",
        "tcp": "tcp.outbound_tcp.downstream_cx_total",
    },
    "server": {
        "http": "http.inbound_http.downstream_rq_total",
        "tcp": "tcp.inbound_tcp.downstream_cx_total",
    },
}
_REPORTER = {"client": "source", "server": "destination"}


def envoy_counts(counters: Mapping[str, int], side: str) -> dict[str, int]:
    """``{"http", "tcp"}`` from Envoy's counters for ``side`` ("client" or "server")."""
    return {kind: int(counters.get(name, 0)) for kind, name in _ENVOY[side].items()}


def sidecar_counts(exposition: str, side: str) -> dict[str, int]:
    """``{"http", "tcp"}`` from hybridmesh's proxy ``/metrics`` text for ``side``."""
    reporter = _REPORTER[side]
    totals = {"http": 0.0, "tcp": 0.0}
    for (name, labels), value in parse(exposition).items():
        if dict(labels).get("reporter") != reporter:
            continue
        if name == "request_total":
            totals["http"] += value
        elif name == "tcp_open_total":
            totals["tcp"] += value
    return {kind: int(v) for kind, v in totals.items()}


def proxy_checks(
    before: Mapping[str, Mapping[str, int]],
    after: Mapping[str, Mapping[str, int]],
    *,
    http: bool,
    ops: float,
) -> dict[str, float]:
    """Share of the run's operations each side's proxy saw (TCP: 1.0 if it saw a connection).

    Sides without a reading (no proxy, or one that could not be read) get no check."""
    kind = "http" if http else "tcp"
    out: dict[str, float] = {}
    for side in ("client", "server"):
        if side not in after or side not in before:
            continue
        moved = after[side].get(kind, 0) - before[side].get(kind, 0)
        if http:
            out[f"proxy_{side}_share"] = round(moved / ops, 4) if ops else 0.0
        else:
            out[f"proxy_{side}_share"] = 1.0 if moved > 0 else 0.0
    return out
