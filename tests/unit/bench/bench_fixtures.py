"""Small results documents for the bench's pure parts (no lab, no tools)."""

from __future__ import annotations

from hybridmesh.bench.model import (
    ConfigDoc,
    ContenderDoc,
    MachineDoc,
    Results,
    SampleDoc,
    ScenarioDoc,
    VersionsDoc,
)
from hybridmesh.bench.scenarios import SCENARIOS
from hybridmesh.bench.stats import aggregate
from hybridmesh.lab.workloads._stats import Histogram


def histogram(*values_us: float) -> dict[str, object]:
    hist = Histogram()
    for v in values_us:
        hist.record(v)
    return hist.to_json()


def sample(
    contender: str,
    metrics: dict[str, float],
    *,
    scenario: str = "http-latency",
    variant: str = "same-node",
    level: int | None = 1000,
    repeat: int = 0,
    order: int = 0,
    hist: dict[str, object] | None = None,
) -> SampleDoc:
    return SampleDoc(
        scenario=scenario,
        variant=variant,
        level=level,
        contender=contender,
        repeat=repeat,
        order=order,
        started_at=1_700_000_000.0 + order,
        wall_s=10.0,
        metrics=metrics,
        histogram=hist,
    )


def latency_metrics(p50: float, p99: float, *, proxy_cpu: float = 0.0) -> dict[str, float]:
    return {
        "rps": 1000.0, "errors": 0.0, "p50_ms": p50, "p90_ms": p50 * 1.5, "p99_ms": p99,
        "p999_ms": p99 * 2, "mean_ms": p50 * 1.1, "send_lag_p99_ms": 0.4,
        "cpu_loadgen_pct": 12.0, "cpu_loadgen_us_per_op": 120.0, "cpu_app_us_per_op": 30.0,
        "cpu_proxy_client_us_per_op": proxy_cpu / 2, "cpu_proxy_server_us_per_op": proxy_cpu / 2,
        "cpu_proxy_us_per_op": proxy_cpu, "cpu_ebpf_us_per_op": 0.0,
        "rss_proxy_client_mib": 40.0 if proxy_cpu else 0.0,
        "rss_proxy_server_mib": 41.0 if proxy_cpu else 0.0,
        "rss_proxy_mib": 81.0 if proxy_cpu else 0.0,
        "rss_loadgen_mib": 35.0,
        "rss_app_mib": 25.0,
    }  # fmt: skip


def results(
    samples: list[SampleDoc], contenders: tuple[str, ...] = ("none", "envoy-sidecar")
) -> Results:
    measured = {s.scenario for s in samples}
    doc = Results(
        created_at="2026-01-01T00:00:00+00:00",
        machine=MachineDoc(
            kernel="6.1",
            os="Debian",
            cpu_model="Xeon",
            cores=2,
            memory_bytes=2**34,
            loadavg_start=[0.1, 0.2, 0.3],
        ),
        versions=VersionsDoc(
            python="3.11",
            hybridmesh="0.1.0",
            envoy="1.40.0",
            git_commit="abc123",
            git_dirty=False,
            wrk="wrk 4.1",
            h2load="h2load 1.52",
        ),
        config=ConfigDoc(
            profile="quick",
            duration_s=2,
            warmup_s=0.5,
            repeats=1,
            rates=[1000],
            concurrency=[16],
            variants=["same-node"],
            loadgen_concurrency=64,
            command="hybridmesh bench --quick",
        ),
        scenarios=[
            ScenarioDoc(
                name=s.name,
                summary=s.summary,
                description=s.description,
                implemented=s.implemented,
                measured=s.name in measured,
                level_unit=s.level_unit,
            )
            for s in SCENARIOS.values()
        ],
        contenders=[
            ContenderDoc(name=c, description=f"{c} | piped", placement="none") for c in contenders
        ],
        samples=samples,
    )
    doc.cells = aggregate(samples, list(contenders))
    return doc
