"""`hybridmesh stat` over ``node`` pods: their node proxies are scraped, rows count connections."""

from __future__ import annotations

import json
from typing import Any

import typer
from typer.testing import CliRunner

from hybridmesh.agent.nodeproxy.metrics import NodeProxyMetrics
from hybridmesh.cli import stat
from hybridmesh.telemetry.proxy_metrics import Peer

PODS = [
    {"namespace": "shop", "name": "amb-0", "workload": "amb", "node": "node-1",
     "ip": "10.0.1.5", "placement": "node", "ready": True},
    {"namespace": "shop", "name": "amb-1", "workload": "amb", "node": "node-2",
     "ip": "10.0.2.5", "placement": "node", "ready": True},
    {"namespace": "shop", "name": "api-0", "workload": "api", "node": "node-1",
     "ip": "10.0.1.6", "placement": "node", "ready": True},
    {"namespace": "shop", "name": "db-0", "workload": "db", "node": "node-2",
     "ip": "10.0.2.7", "placement": "kernel", "ready": True},
]  # fmt: skip
BOTH = ("source", "destination")
AMB, API = (Peer(w, "shop", f"spiffe://cluster.local/ns/shop/sa/{w}") for w in ("amb", "api"))


class NodeLab:
    """Two node proxies (real NodeProxyMetrics); traffic happens during sleep()."""

    def __init__(self) -> None:
        self.proxies = {"node-1": NodeProxyMetrics(), "node-2": NodeProxyMetrics()}
        self.scraped: list[tuple[str, str, str]] = []
        self.now = 50.0
        self.attempts("node-1", BOTH, 7, ok=True)  # before the window

    def attempts(self, node: str, reporters: tuple[str, ...], count: int, *, ok: bool) -> None:
        for _ in range(count):
            for reporter in reporters:
                self.proxies[node].connect((reporter, AMB, API, "shop/api"), ok=ok,
                                           elapsed_s=0.0015)

    def scrape(self, target: Any) -> str:
        self.scraped.append((target["namespace"], target["name"], target["ip"]))
        return self.proxies[target["node"]].exposition().decode()

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.attempts("node-1", BOTH, 30, ok=True)  # amb-0 -> api-0: one proxy, both sides
        self.attempts("node-1", BOTH, 10, ok=False)  # refused by policy
        self.attempts("node-2", ("source",), 20, ok=True)  # amb-1 -> api-0 across nodes
        self.attempts("node-1", ("destination",), 20, ok=True)  # ... its tunnel's far end

    def sources(self) -> stat.StatSources:
        return stat.StatSources(pods=lambda: [dict(p) for p in PODS], scrape=self.scrape,
                                sleep=self.sleep, clock=lambda: self.now)


def _invoke(lab: NodeLab, *args: str) -> Any:
    root = typer.Typer()

    @root.callback()
    def _group() -> None:
        """Force a command group, as the real root app is."""

    stat.register(root, sources=lab.sources)
    return CliRunner().invoke(root, ["stat", *args])


def test_node_workloads_get_connection_figures_from_their_node_proxies() -> None:
    lab = NodeLab()
    result = _invoke(lab, "-w", "10", "-o", "json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["rows"]}
    api = rows["api"]
    assert (api["requests"], api["successRate"], api["rps"], api["unit"]) == (
        60, 0.83333, 6.0, "connections")  # rounded to 5 digits
    assert 1.0 <= api["latencyMs"]["p50"] <= 2.5
    assert rows["amb"]["rps"] == 0.0 and rows["amb"]["meshedPods"] == 2  # answered, idle
    assert rows["db"]["rps"] is None  # kernel: nobody reports for it
    assert sorted(set(lab.scraped)) == [("nodeproxy", "node-1", "127.0.0.1"),
                                        ("nodeproxy", "node-2", "127.0.0.1")]


def test_from_view_reads_the_callers_node_proxies_and_prints_cps() -> None:
    lab = NodeLab()
    result = _invoke(lab, "--from", "deploy/amb", "-w", "10")
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert any(line.startswith("shop api 1/1 83.33% 6.0cps") for line in lines), lines
    assert any(line.startswith("cps: connections/s through node proxies") for line in lines)


def test_from_a_workload_without_node_pods_scrapes_no_node_proxy() -> None:
    lab = NodeLab()
    result = _invoke(lab, "--from", "deploy/db", "-w", "1")
    assert result.exit_code == 0, result.output
    assert lab.scraped == []


def test_to_view_reads_the_destinations_node_proxies_once_per_edge() -> None:
    """api-0 (node-1) is called by amb-0 on its node (one proxy, both ends) and by amb-1 from
    node-2 (the far end reports the destination side): 30 + 10 + 20, each counted once."""
    lab = NodeLab()
    result = _invoke(lab, "--to", "deploy/api", "-w", "10", "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["reporter"] == "destination"
    assert [(r["name"], r["requests"], r["successRate"], r["unit"]) for r in data["rows"]] == [
        ("amb", 60, 0.83333, "connections")]
    assert sorted(set(lab.scraped)) == [("nodeproxy", "node-1", "127.0.0.1")]  # api's node


def test_from_view_counts_same_node_and_cross_node_attempts_once() -> None:
    lab = NodeLab()
    result = _invoke(lab, "--from", "deploy/amb", "-w", "10", "-o", "json")
    assert result.exit_code == 0, result.output
    [api] = json.loads(result.stdout)["rows"]
    assert (api["name"], api["requests"], api["successRate"]) == ("api", 60, 0.83333)
