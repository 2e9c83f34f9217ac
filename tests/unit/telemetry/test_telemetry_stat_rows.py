"""stat_rows: meshed counts, which rows get figures, edge views."""

from __future__ import annotations

from typing import Any

from hybridmesh.telemetry.scrape import Samples, parse
from hybridmesh.telemetry.stat_rows import View, build_rows, edge_reporter, scrape_targets


def _pod(name: str, workload: str, placement: str, ready: bool = True) -> dict[str, Any]:
    return {"namespace": "ns", "name": name, "workload": workload, "placement": placement,
            "ready": ready, "ip": "10.0.0.1", "node": "n"}  # fmt: skip


PODS = [
    _pod("a-0", "a", "sidecar"),
    _pod("a-1", "a", "node"),
    _pod("a-2", "a", "none"),
    _pod("b-0", "b", "sidecar", ready=False),
    _pod("c-0", "c", "kernel"),
]

OUTBOUND = parse(
    'request_total{reporter="source",source_workload="a",source_workload_namespace="ns",'
    'destination_workload="unknown",destination_workload_namespace="unknown",'
    'response_code="200"} 4\n'
    'tcp_open_total{reporter="source",source_workload="a",source_workload_namespace="ns",'
    'destination_workload="c",destination_workload_namespace="ns"} 3\n'
)


def test_scrape_targets_are_ready_sidecars_only() -> None:
    assert [p["name"] for p in scrape_targets(PODS)] == ["a-0"]


def test_meshed_counts_node_placement_and_unscraped_workloads_have_no_figures() -> None:
    rows = build_rows(PODS, {}, {}, 5.0, scraped={("ns", "a-0")})
    by_name = {r.name: r for r in rows}
    assert [(r.name, r.meshed, r.pods) for r in rows] == [("a", 2, 3), ("b", 1, 1), ("c", 0, 1)]
    assert by_name["a"].stats is not None and by_name["a"].stats.requests == 0
    assert by_name["a"].tcp_connections == 0
    assert by_name["b"].stats is None and by_name["b"].tcp_connections is None  # not ready
    assert by_name["c"].stats is None


def test_from_view_lists_unknown_destinations_and_tcp_only_edges() -> None:
    empty: Samples = {}
    rows = build_rows(PODS, OUTBOUND, OUTBOUND, 2.0, scraped={("ns", "a-0")},
                      view=View(from_workload="a"))  # fmt: skip
    assert [(r.namespace, r.name, r.pods) for r in rows] == [
        ("ns", "c", 1),
        ("unknown", "unknown", 0),
    ]
    c, unknown = rows
    assert c.tcp_connections == 3 and c.stats is not None and c.stats.requests == 0
    assert unknown.stats is not None and unknown.stats.rps == 2.0
    assert build_rows(PODS, empty, empty, 2.0, scraped=set(), view=View(from_workload="b")) == []


def test_view_filters_namespace_and_name() -> None:
    rows = build_rows(PODS, {}, {}, 1.0, scraped=set(), view=View(namespace="ns", name="c"))
    assert [r.name for r in rows] == ["c"]
    assert build_rows(PODS, {}, {}, 1.0, scraped=set(), view=View(namespace="other")) == []


def test_json_nulls_for_unknown_figures() -> None:
    row = build_rows(PODS, {}, {}, 1.0, scraped=set(), view=View(name="c"))[0]
    assert row.to_json() == {
        "namespace": "ns", "name": "c", "meshedPods": 0, "pods": 1, "requests": None,
        "successRate": None, "rps": None, "latencyMs": {"p50": None, "p95": None, "p99": None},
        "tcpConnections": None, "unit": None,
    }  # fmt: skip


def _edge(reporter: str, source: str, dest: str, count: int) -> str:
    return (f'tcp_connect_total{{reporter="{reporter}",source_workload="{source}",'
            f'source_workload_namespace="ns",destination_workload="{dest}",'
            f'destination_workload_namespace="ns",outcome="ok"}} {count}\n')


def test_each_view_reads_one_reporter_so_a_doubly_reported_edge_counts_once() -> None:
    # a -> a' same-node through one node proxy: reported as both ends; a -> c (kernel): only
    # the caller's proxy can report it
    both = parse(_edge("source", "a", "a", 5) + _edge("destination", "a", "a", 5)
                 + _edge("source", "a", "c", 2))
    assert edge_reporter(PODS, View(from_workload="a")) == "source"
    assert edge_reporter(PODS, View(to_workload="a")) == "destination"  # meshed: its own
    assert edge_reporter(PODS, View(to_workload="c")) == "source"  # kernel: the callers'
    assert edge_reporter(PODS, View()) == "destination"

    def requests(view: View) -> dict[str, float]:
        rows = build_rows(PODS, both, both, 1.0, scraped=set(), view=view)
        return {r.name: r.stats.requests for r in rows if r.stats is not None}

    assert requests(View(from_workload="a")) == {"a": 5, "c": 2}
    assert requests(View(to_workload="a")) == {"a": 5}
    assert requests(View(to_workload="c")) == {"a": 2}
    assert requests(View(name="a")) == {"a": 5}


def test_an_idle_node_workload_counts_connections_and_a_sidecar_one_requests() -> None:
    pods = [_pod("n-0", "n", "node"), _pod("s-0", "s", "sidecar")]
    rows = build_rows(pods, {}, {}, 1.0, scraped={("ns", "s-0"), ("nodeproxy", "n")})
    assert [(r.name, r.stats and r.stats.unit) for r in rows] == [
        ("n", "connections"), ("s", "requests")]
