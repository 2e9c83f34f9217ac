"""`hybridmesh stat`: table and JSON from a fake lab whose proxies are real ProxyMetrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from hybridmesh.cli import stat
from hybridmesh.telemetry.fetch import FetchError
from hybridmesh.telemetry.proxy_metrics import Peer, ProxyMetrics


def _pod(name: str, workload: str, placement: str, *, ready: bool = True) -> dict[str, Any]:
    index = int(name.rsplit("-", 1)[1])
    return {
        "namespace": "shop", "name": name, "workload": workload, "node": f"node-{index + 1}",
        "ip": f"10.0.{index + 1}.{len(workload)}", "placement": placement, "ready": ready,
    }  # fmt: skip


PODS = [
    _pod("web-0", "web", "sidecar"),
    _pod("web-1", "web", "sidecar+ebpf"),
    _pod("web-2", "web", "sidecar", ready=False),
    _pod("client-0", "client", "sidecar"),
    _pod("db-0", "db", "none"),
    _pod("cache-0", "cache", "kernel"),
]
PEERS = {w: Peer(w, "shop", f"spiffe://cluster.local/ns/shop/sa/{w}") for w in
         ("web", "client", "db")}  # fmt: skip


class FakeLab:
    """Pods, one ProxyMetrics per meshed pod, a clock; traffic happens during sleep()."""

    def __init__(self, traffic: Callable[[FakeLab], None]) -> None:
        self.now = 1000.0
        self.proxies = {p["name"]: ProxyMetrics() for p in PODS if "sidecar" in p["placement"]}
        self.broken: set[str] = set()
        self.scraped: list[str] = []
        self.traffic = traffic
        self.slept: list[float] = []
        # traffic before the window must not show up in it
        self.request("web-0", "client", "web", 200, 0.002, count=1000)

    def request(self, pod: str, src: str, dst: str, status: int, latency_s: float, *,
                count: int = 1, reporter: str = "destination") -> None:  # fmt: skip
        for _ in range(count):
            self.proxies[pod].request(
                reporter=reporter, source=PEERS[src], destination=PEERS[dst],
                service=f"{dst}.shop.svc.cluster.local", protocol="http", status=status,
                grpc_status="", flags="-", latency_s=latency_s,
            )  # fmt: skip

    def scrape(self, pod: Any) -> str:
        self.scraped.append(pod["name"])
        if pod["name"] in self.broken:
            raise FetchError(f"connect to {pod['ip']}:15020 from node {pod['node']}: refused")
        return self.proxies[pod["name"]].exposition().decode()

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.traffic(self)

    def sources(self) -> stat.StatSources:
        return stat.StatSources(
            pods=lambda: [dict(p) for p in PODS],
            scrape=self.scrape,
            sleep=self.sleep,
            clock=lambda: self.now,
        )


def shop_traffic(lab: FakeLab) -> None:
    lab.request("web-0", "client", "web", 200, 0.0008, count=90)
    lab.request("web-0", "client", "web", 503, 0.004, count=10)
    lab.request("web-1", "client", "web", 200, 0.0008, count=100)
    lab.request("client-0", "client", "web", 200, 0.0012, count=200, reporter="source")
    lab.request("client-0", "client", "db", 200, 0.03, count=50, reporter="source")
    edge = {"reporter": "destination", "source": PEERS["client"], "destination": PEERS["web"],
            "service": "web.shop.svc.cluster.local"}  # fmt: skip
    lab.proxies["web-0"].tcp_open(**edge)  # type: ignore[arg-type]
    lab.proxies["web-0"].tcp_open(**edge)  # type: ignore[arg-type]
    lab.proxies["web-1"].tcp_open(**edge)  # type: ignore[arg-type]
    lab.proxies["web-0"].tcp_close(**edge, read_bytes=1, write_bytes=1)  # type: ignore[arg-type]


def _app(sources: Callable[[], stat.StatSources]) -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _group() -> None:
        """Force a command group, as the real root app is."""

    stat.register(root, sources=sources)
    return root


def _invoke(lab: FakeLab, *args: str) -> Any:
    return CliRunner().invoke(_app(lab.sources), ["stat", *args])


def test_table_rows_per_workload() -> None:
    lab = FakeLab(shop_traffic)
    result = _invoke(lab, "--window", "10")
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert lines[0] == "inbound traffic, workloads' own proxies, over 10.0s"
    assert lines[1] == ("NAMESPACE NAME MESHED SUCCESS RPS LATENCY_P50 LATENCY_P95 "
                        "LATENCY_P99 TCP_CONN")  # fmt: skip
    assert lines[2:] == [
        "shop cache 0/1 - - - - - -",
        "shop client 1/1 - 0.0rps - - - 0",
        "shop db 0/1 - - - - - -",
        # 200 requests in 10 s, 10 of them 503; 190 at 0.8 ms (bucket 0.5–1), 10 at 4 ms
        # (bucket 2.5–5): p50 = 0.5 + 0.5·100/190, p95 = rank 190 = top of 0.5–1,
        # p99 = 2.5 + 2.5·(198−190)/10; connections: 3 opened − 1 closed
        "shop web 3/3 95.00% 20.0rps 0.76ms 1.00ms 4.50ms 2",
    ]
    assert lab.slept == [10.0]
    assert sorted(lab.scraped) == sorted(["web-0", "web-1", "client-0"] * 2)  # not web-2


def test_json_output() -> None:
    result = _invoke(FakeLab(shop_traffic), "-w", "10", "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["view"], data["from"], data["to"]) == ("workload", None, None)
    assert data["windowSeconds"] == 10.0
    assert data["scrapeErrors"] == []
    rows = {row["name"]: row for row in data["rows"]}
    assert rows["web"] == {
        "namespace": "shop", "name": "web", "meshedPods": 3, "pods": 3, "requests": 200,
        "successRate": 0.95, "rps": 20.0,
        "latencyMs": {"p50": 0.763, "p95": 1.0, "p99": 4.5}, "tcpConnections": 2,
        "unit": "requests",
    }  # fmt: skip
    assert rows["db"]["successRate"] is None and rows["db"]["rps"] is None
    assert rows["db"]["tcpConnections"] is None
    assert rows["client"]["rps"] == 0.0 and rows["client"]["successRate"] is None


def test_one_workload_by_reference() -> None:
    for ref in ("deploy/web", "workload/web", "web"):
        result = _invoke(FakeLab(shop_traffic), ref, "-w", "10", "-o", "json")
        assert result.exit_code == 0, result.output
        assert [r["name"] for r in json.loads(result.stdout)["rows"]] == ["web"]


def test_from_view_shows_destinations_including_unmeshed() -> None:
    lab = FakeLab(shop_traffic)
    result = CliRunner().invoke(_app(lab.sources), ["stat", "--from", "deploy/client", "-w", "10"])
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert lines[0] == "traffic from client, callers' proxies, over 10.0s"
    # db: 50 at 30 ms (bucket 25–50): 25 + 25·q; web: 200 at 1.2 ms (bucket 1–2.5): 1 + 1.5·q
    assert lines[2:] == [
        "shop db 0/1 100.00% 5.0rps 37.5ms 48.8ms 49.8ms 0",
        "shop web 3/3 100.00% 20.0rps 1.75ms 2.42ms 2.49ms 0",
    ]
    assert set(lab.scraped) == {"client-0"}  # only the caller's proxies


def test_to_view_shows_callers() -> None:
    result = _invoke(FakeLab(shop_traffic), "--to", "db", "-w", "10", "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["view"], data["to"]) == ("to", "db")
    assert [(r["name"], r["requests"], r["rps"]) for r in data["rows"]] == [("client", 50, 5.0)]
    assert data["reporter"] == "source"  # db runs no proxy: its callers' proxies report


def test_to_a_meshed_workload_reads_its_own_proxies() -> None:
    """Istio's convention: --to reads the destination-reported series (web's own sidecars saw
    10 of client's 200 requests fail; client's proxy, the source end, saw none fail)."""
    lab = FakeLab(shop_traffic)
    result = _invoke(lab, "--to", "deploy/web", "-w", "10", "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["reporter"] == "destination"
    assert [(r["name"], r["requests"], r["successRate"], r["tcpConnections"])
            for r in data["rows"]] == [("client", 200, 0.95, 2)]  # fmt: skip
    assert set(lab.scraped) == {"web-0", "web-1"}  # web's ready proxies only
    table = _invoke(FakeLab(shop_traffic), "--to", "web", "-w", "10")
    assert table.stdout.splitlines()[0].startswith("traffic to web, its own proxies")


def test_from_view_without_traffic_says_so() -> None:
    result = _invoke(FakeLab(lambda lab: None), "--from", "client", "-w", "1")
    assert result.exit_code == 0, result.output
    assert "no traffic on that edge in the window" in result.stdout


def test_empty_namespace_says_no_workloads() -> None:
    result = _invoke(FakeLab(shop_traffic), "-n", "empty", "-w", "1")
    assert result.exit_code == 0, result.output
    assert "no workloads in the window" in result.stdout


def test_unreachable_proxy_is_a_warning_and_listed() -> None:
    lab = FakeLab(shop_traffic)
    lab.broken.add("web-1")
    result = _invoke(lab, "-w", "10", "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["scrapeErrors"] == [
        {"pod": "shop/web-1", "error": "connect to 10.0.2.3:15020 from node node-2: refused"}
    ]
    web = next(r for r in data["rows"] if r["name"] == "web")
    assert web["requests"] == 100  # web-0 only
    table = _invoke(lab, "-w", "10")
    assert "warning: shop/web-1: connect to 10.0.2.3:15020" in table.stderr


def test_no_proxy_answering_fails() -> None:
    lab = FakeLab(shop_traffic)
    lab.broken.update({"web-0", "web-1", "client-0"})
    result = _invoke(lab, "-w", "1")
    assert result.exit_code == 1
    assert "error: no proxy answered on :15020/metrics" in result.stderr


def test_no_lab_is_a_clear_error() -> None:
    def no_lab() -> list[dict[str, Any]]:
        raise stat.NoLab("lab API at /run/hm-lab/api.sock did not answer")

    sources = stat.StatSources(pods=no_lab, scrape=lambda pod: "")
    result = CliRunner().invoke(_app(lambda: sources), ["stat"])
    assert result.exit_code == 1
    assert "error: no lab is running" in result.stderr
    assert "hybridmesh lab up" in result.stderr
    assert result.stdout == ""


def test_unmeshed_lab_does_not_wait_the_window() -> None:
    lab = FakeLab(shop_traffic)
    sources = lab.sources()
    sources.pods = lambda: [p for p in PODS if p["placement"] in ("none", "kernel")]
    result = CliRunner().invoke(_app(lambda: sources), ["stat", "-w", "30"])
    assert result.exit_code == 0, result.output
    assert lab.slept == []


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["deploy/nope"], "no workload nope in the lab", 1),
        (["-n", "other", "web"], "no workload web in namespace other", 1),
        (["svc/web"], "'svc/web' is not a workload reference", 2),
        (["--from", "web", "--to", "db"], "--from and --to cannot be combined", 2),
        (["--from", "deploy"], "--from/--to need a workload name", 2),
        (["--to", "ghost"], "no workload ghost in the lab", 1),
    ],
)
def test_bad_input_is_a_clear_error(args: list[str], message: str, code: int) -> None:
    result = _invoke(FakeLab(shop_traffic), *args)
    assert result.exit_code == code
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_window_must_be_positive() -> None:
    result = _invoke(FakeLab(shop_traffic), "-w", "0")
    assert result.exit_code == 2
