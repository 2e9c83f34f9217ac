"""The rows of ``hybridmesh stat``: lab pods plus a scrape window, one row per workload.

Pure: the CLI fetches pods and scrapes, this module decides what each row says. Three views,
Linkerd's ``viz stat`` shapes:

- default: each workload's inbound traffic, from its own proxies (``reporter="destination"``);
- ``--from W``: the destinations W called, from W's proxies (``reporter="source"``);
- ``--to W``: the callers of W, from W's own proxies (``reporter="destination"``), Istio's
  convention; when W runs no proxy (``none``, ``kernel``) nobody reports that end, so the
  callers' proxies do (``reporter="source"``), which is how traffic to it becomes visible.

Each view reads exactly one reporter (:func:`edge_reporter`), so an edge is counted once even
where one proxy reports both of its ends (a ``node`` proxy's same-node connections).

A workload whose pods run no proxy (placement ``none`` or ``kernel``) has no figures ("-"), as
does a meshed one none of whose proxies could be scraped; a scraped one without traffic has
0 RPS and unknown success.

``node`` pods have no proxy of their own: their node's shared proxy reports for them, per
source/destination workload like a sidecar, at ``127.0.0.1:15020`` inside the node netns
(:func:`node_proxy_targets`, one per node hosting a ready ``node`` pod). It is L4, so its rows
count connections, not requests (``TrafficStats.unit``, see ``scrape.connection_stats``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from hybridmesh.telemetry.proxy_metrics import REPORTER_DESTINATION, REPORTER_SOURCE
from hybridmesh.telemetry.scrape import (
    DESTINATION_KEYS,
    SOURCE_KEYS,
    UNIT_CONNECTIONS,
    UNIT_REQUESTS,
    SeriesKey,
    TrafficStats,
    connection_stats,
    group_stats,
    open_connections,
)

__all__ = [
    "MESHED_PLACEMENTS",
    "NODE_PROXY_NAMESPACE",
    "SIDECAR_PLACEMENTS",
    "StatRow",
    "View",
    "build_rows",
    "edge_reporter",
    "has_sidecar",
    "is_meshed",
    "node_proxy_targets",
    "scrape_targets",
]

Pod = Mapping[str, Any]
WorkloadKey = tuple[str, str]  # (namespace, workload)
_T = TypeVar("_T")

SIDECAR_PLACEMENTS: Final = frozenset({"sidecar", "sidecar+ebpf"})
"""Placements with a proxy of the pod's own, scraped at ``<pod ip>:15020``."""
MESHED_PLACEMENTS: Final = SIDECAR_PLACEMENTS | {"node"}
"""Placements whose traffic goes through a proxy (``node``: the node's shared proxy)."""


def has_sidecar(pod: Pod) -> bool:
    return pod.get("placement") in SIDECAR_PLACEMENTS


def is_meshed(pod: Pod) -> bool:
    return pod.get("placement") in MESHED_PLACEMENTS


NODE_PROXY_NAMESPACE: Final = "nodeproxy"
"""The ``namespace`` of a node proxy's scrape target (its ``name`` is the node)."""
NODE_PLACEMENT: Final = "node"


def scrape_targets(pods: Iterable[Pod]) -> list[Pod]:
    """Pods whose own proxy can be scraped: a sidecar placement, ready, with an address."""
    return [p for p in pods if has_sidecar(p) and p.get("ready") and p.get("ip")]


def node_proxy_targets(pods: Iterable[Pod]) -> list[Pod]:
    """One target per node hosting a ready ``node`` pod: its node proxy, on the node's
    loopback (the admin port listens on every address of the node netns)."""
    nodes = sorted({str(p["node"]) for p in pods
                    if p.get("placement") == NODE_PLACEMENT and p.get("ready") and p.get("node")})
    return [{"namespace": NODE_PROXY_NAMESPACE, "name": node, "node": node, "ip": "127.0.0.1",
             "workload": "", "placement": "nodeproxy", "ready": True} for node in nodes]


def _answered(pods: Sequence[Pod], scraped: Collection[tuple[str, str]]) -> set[WorkloadKey]:
    """Workloads one of whose proxies answered: the pod's own, or its node's node proxy."""
    out = set()
    for p in pods:
        own = (p["namespace"], p["name"]) in scraped
        shared = p.get("placement") == NODE_PLACEMENT and \
            (NODE_PROXY_NAMESPACE, p.get("node")) in scraped
        if own or shared:
            out.add(_workload(p))
    return out


@dataclass(frozen=True)
class View:
    """What the user asked for: a workload filter, and at most one of from/to."""

    namespace: str | None = None
    name: str | None = None
    from_workload: str | None = None
    from_namespace: str | None = None
    to_workload: str | None = None
    to_namespace: str | None = None

    @property
    def kind(self) -> str:
        if self.from_workload:
            return "from"
        return "to" if self.to_workload else "workload"

    def selects(self, key: WorkloadKey) -> bool:
        namespace, name = key
        return (self.namespace in (None, namespace)) and (self.name in (None, name))


@dataclass(frozen=True)
class StatRow:
    namespace: str
    name: str
    meshed: int
    pods: int
    stats: TrafficStats | None  # None: no proxy reported on this workload
    tcp_connections: int | None

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "namespace": self.namespace,
            "name": self.name,
            "meshedPods": self.meshed,
            "pods": self.pods,
            "requests": None if s is None else round(s.requests),
            "successRate": _round(s.success_rate if s else None, 5),
            "rps": _round(s.rps if s else None, 3),
            "latencyMs": {
                "p50": _round(s.p50_ms if s else None, 3),
                "p95": _round(s.p95_ms if s else None, 3),
                "p99": _round(s.p99_ms if s else None, 3),
            },
            "tcpConnections": self.tcp_connections,
            "unit": None if s is None else s.unit,  # "requests", or L4 "connections"
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def edge_reporter(pods: Iterable[Pod], view: View) -> str:
    """The one ``reporter`` a view reads: the callers' side for ``--from``; for ``--to`` the
    destination's own proxies if it has any (sidecar or node proxy), else the callers'."""
    if view.kind == "from":
        return REPORTER_SOURCE
    if view.kind == "workload":
        return REPORTER_DESTINATION
    meshed = any(is_meshed(p) for p in pods if p["workload"] == view.to_workload
                 and view.to_namespace in (None, p["namespace"]))
    return REPORTER_DESTINATION if meshed else REPORTER_SOURCE


def _edge_query(view: View) -> tuple[Sequence[str], dict[str, str]]:
    """(labels naming a row, label filter) of an edge view."""
    if view.from_workload:
        where = {"source_workload": view.from_workload}
        if view.from_namespace:
            where["source_workload_namespace"] = view.from_namespace
        return DESTINATION_KEYS, where
    where = {"destination_workload": view.to_workload or ""}
    if view.to_namespace:
        where["destination_workload_namespace"] = view.to_namespace
    return SOURCE_KEYS, where


def build_rows(
    pods: Sequence[Pod],
    window: Mapping[SeriesKey, float],
    current: Mapping[SeriesKey, float],
    window_s: float,
    *,
    scraped: Collection[tuple[str, str]],
    view: View | None = None,
) -> list[StatRow]:
    """Rows for ``view``; ``scraped`` holds the (namespace, pod) whose proxies answered twice.

    The workload view lists every workload of ``pods``; edge views list the workloads that
    had traffic on the asked-for edge (including ones the lab does not know, e.g. "unknown").
    """
    view = view or View()
    totals = Counter(_workload(p) for p in pods)
    meshed = Counter(_workload(p) for p in pods if is_meshed(p))
    by: Sequence[str]
    where: dict[str, str]
    reporter = edge_reporter(pods, view)
    if view.kind == "workload":
        by, where = DESTINATION_KEYS, {}
        listed, answered = set(totals), _answered(pods, scraped)
    else:
        by, where = _edge_query(view)
        listed, answered = set(), set()
    stats = _pairs(connection_stats(window, window_s, reporter=reporter, by=by, where=where))
    stats.update(_pairs(group_stats(window, window_s, reporter=reporter, by=by, where=where)))
    conns = _pairs(open_connections(current, reporter=reporter, by=by, where=where))
    with_data = answered | set(stats) | set(conns)
    l4 = {_workload(p) for p in pods if p.get("placement") == NODE_PLACEMENT}
    return [
        StatRow(
            namespace=key[0],
            name=key[1],
            meshed=meshed[key],
            pods=totals[key],
            stats=stats.get(key, _idle(window_s, key in l4)) if key in with_data else None,
            tcp_connections=conns.get(key, 0) if key in with_data else None,
        )
        for key in sorted(listed | with_data)
        if view.selects(key)
    ]


def _idle(window_s: float, l4: bool) -> TrafficStats:
    """No traffic in the window, in the unit the workload's proxy counts (node pods: cps)."""
    unit = UNIT_CONNECTIONS if l4 else UNIT_REQUESTS
    return TrafficStats(0.0, 0.0, window_s, None, None, None, unit)


def _pairs(groups: Mapping[tuple[str, ...], _T]) -> dict[WorkloadKey, _T]:
    return {(group[0], group[1]): value for group, value in groups.items()}


def _workload(pod: Pod) -> WorkloadKey:
    return (pod["namespace"], pod["workload"])
