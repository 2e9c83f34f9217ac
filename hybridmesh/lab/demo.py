"""`hybridmesh demo`: bring up the embedded shop, watch real traffic for a few seconds, report.

Every demo workload keeps cumulative per-edge statistics (requests, errors, a latency
histogram) and serves them at ``/_hm/stats``. The demo reads them from every pod twice and
subtracts, so the table covers exactly the observation window, whatever ran before it.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hybridmesh.lab import names, netns
from hybridmesh.lab.sidecar import PROXY_MARK
from hybridmesh.lab.workloads._stats import EdgeStats, StatsMismatch
from hybridmesh.resources import DEFAULT_TOPOLOGY_NAME, dump_documents, load_documents, merge

__all__ = ["EdgeRow", "collect", "edge_rows", "observe", "with_placement"]

STATS_PATH = "/_hm/stats"
SIDECAR_PLACEMENTS = frozenset({"sidecar", "sidecar+ebpf"})


@dataclass(frozen=True)
class EdgeRow:
    source: str  # namespace/workload
    destination: str  # the host the source called (a service name)
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float

    @property
    def success_rate(self) -> float:
        return 1.0 - self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "requests": self.requests,
            "errors": self.errors,
            "successRate": round(self.success_rate, 5),
            "rps": round(self.rps, 2),
            "p50Ms": round(self.p50_ms, 3),
            "p99Ms": round(self.p99_ms, 3),
        }


def with_placement(text: str, placement: str) -> str:
    """The demo topology with every workload moved to ``placement`` (MeshConfig default)."""
    base = load_documents(text, DEFAULT_TOPOLOGY_NAME)
    overlay = load_documents(
        "apiVersion: hybridmesh.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\n"
        f"spec: {{trustDomain: cluster.local, defaultPlacement: {placement}}}\n",
        "--placement",
    )
    return dump_documents(merge(base, overlay))


def _stats_socket(pod: dict[str, Any], port: int, timeout: float) -> socket.socket:
    """A socket to the pod's app: from its node, or — for a sidecar pod, whose inbound may be
    STRICT mTLS — from inside the pod with the proxy's mark, which capture lets through to the
    app (the lab probes sidecar apps the same way; Istio rewrites kubelet probes for the same
    reason)."""
    if pod.get("placement") not in SIDECAR_PLACEMENTS:
        return netns.connect(names.node_netns(pod["node"]), pod["ip"], port, timeout)
    sock = netns.socket_in(names.pod_netns(pod["namespace"], pod["name"]))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, PROXY_MARK)
        sock.settimeout(timeout)
        sock.connect((pod["ip"], port))
    except BaseException:
        sock.close()
        raise
    return sock


def fetch_stats(pod: dict[str, Any], timeout: float = 2.0) -> dict[str, Any] | None:
    """GET /_hm/stats from a pod's first port (see :func:`_stats_socket`)."""
    if not pod["ports"] or not pod["ready"]:
        return None
    port = pod["ports"][0]["containerPort"]
    sock = _stats_socket(pod, port, timeout)
    conn = http.client.HTTPConnection(pod["ip"], port, timeout=timeout)
    conn.sock = sock
    try:
        conn.request("GET", STATS_PATH)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return None
        data: dict[str, Any] = json.loads(body)
        return data
    finally:
        conn.close()


def collect(pods: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pod in pods:
        try:
            stats = fetch_stats(pod)
        except (OSError, ValueError, http.client.HTTPException, StatsMismatch):
            stats = None
        if stats is not None:
            out[f"{pod['namespace']}/{pod['name']}"] = stats
    return out


def edge_rows(
    pods: list[dict[str, Any]],
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    seconds: float,
) -> list[EdgeRow]:
    """Per (source workload, destination) totals over the window between two collections."""
    workload_of = {
        f"{p['namespace']}/{p['name']}": f"{p['namespace']}/{p['workload']}" for p in pods
    }
    merged: dict[tuple[str, str], EdgeStats] = {}
    for pod_key, stats in after.items():
        old_edges = before.get(pod_key, {}).get("edges", {})
        for dest, raw in stats.get("edges", {}).items():
            edge = EdgeStats.from_json(raw)
            if dest in old_edges:
                edge = edge.minus(EdgeStats.from_json(old_edges[dest]))
            key = (workload_of.get(pod_key, pod_key), dest)
            total = merged.setdefault(key, EdgeStats())
            total.requests += edge.requests
            total.errors += edge.errors
            total.latency.merge(edge.latency)
    rows = [
        EdgeRow(
            source=src,
            destination=dst,
            requests=e.requests,
            errors=e.errors,
            rps=e.requests / seconds if seconds else 0.0,
            p50_ms=e.latency.percentile(50) / 1000,
            p99_ms=e.latency.percentile(99) / 1000,
        )
        for (src, dst), e in merged.items()
    ]
    return sorted(rows, key=lambda row: (row.source, row.destination))


def observe(
    pods: list[dict[str, Any]], seconds: float, tick: Callable[[float], None] | None = None
) -> list[EdgeRow]:
    before = collect(pods)
    started = time.monotonic()
    while (left := seconds - (time.monotonic() - started)) > 0:
        if tick:
            tick(left)
        time.sleep(min(0.25, left))
    after = collect(pods)
    return edge_rows(pods, before, after, time.monotonic() - started)
