"""The headline table: one row per contender and variant, the figures people quote (pure).

* added p50 / p99 at the summary rate (1000 req/s, or the nearest rate measured): contender
  minus none, so the load generator's own send lag cancels out;
* max req/s (http-throughput), tcp-rr transactions/s, tcp-stream Gbit/s, with ratios;
* proxy peak RSS (both sides, the highest median of any cell);
* proxy CPU per request at the summary rate (both sides plus kernel eBPF);
* the load generator's CPU at the highest rate measured, to show it was not the limit;
* gRPC req/s (h2load, multiplexed), the mesh memory per pod at the largest scale measured,
  the blast radius (failed share, time to recover) and the upgrade's failed requests and pod
  restarts — those scenarios run in one variant, so only its rows carry them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hybridmesh.bench.model import CellDoc

__all__ = ["SUMMARY_COLUMNS", "SUMMARY_RATE", "SummaryRow", "summary_rate", "summary_rows"]

SUMMARY_RATE = 1000

SUMMARY_COLUMNS: dict[str, tuple[str, str]] = {
    "added_p50_ms": ("added p50", "ms"),
    "added_p99_ms": ("added p99", "ms"),
    "p50_ratio": ("p50", "× none"),
    "max_rps": ("max req/s", "req/s"),
    "max_rps_ratio": ("max req/s", "× none"),
    "rr_tps": ("tcp-rr", "txn/s"),
    "stream_gbps": ("tcp-stream", "Gbit/s"),
    "grpc_rps": ("gRPC", "req/s"),
    "pod_mesh_mib": ("mesh PSS per pod", "MiB"),
    "blast_failed_pct": ("blast failed", "%"),
    "recovery_s": ("recovery", "s"),
    "upgrade_failed": ("upgrade failed", "req"),
    "upgrade_restarts": ("upgrade restarts", "pods"),
    "proxy_rss_mib": ("proxy RSS", "MiB"),
    "proxy_cpu_us_per_req": ("proxy CPU", "µs/req"),
    "loadgen_cpu_pct": ("loadgen CPU", "% core"),
}
"""Summary keys in display order, with a short label and unit."""


@dataclass(frozen=True, slots=True)
class SummaryRow:
    contender: str
    variant: str
    values: dict[str, float | None]


def summary_rate(cells: Sequence[CellDoc]) -> int | None:
    """The http-latency rate the summary quotes: SUMMARY_RATE if measured, else the closest."""
    rates = sorted({c.level for c in cells if c.scenario == "http-latency" and c.level})
    if not rates:
        return None
    return min(rates, key=lambda r: (abs(r - SUMMARY_RATE), -r))


def _find(
    cells: Sequence[CellDoc], scenario: str, variant: str, contender: str, level: int | None
) -> CellDoc | None:
    for c in cells:
        if (c.scenario, c.variant, c.contender, c.level) == (scenario, variant, contender, level):
            return c
    return None


def _median(cell: CellDoc | None, metric: str) -> float | None:
    if cell is None or metric not in cell.metrics:
        return None
    return cell.metrics[metric].median


def _best(cells: Sequence[CellDoc], scenario: str, variant: str, contender: str) -> CellDoc | None:
    """The cell with the highest median rps among the scenario's levels."""
    found = [
        c
        for c in cells
        if (c.scenario, c.variant, c.contender) == (scenario, variant, contender)
        and "rps" in c.metrics
    ]
    return max(found, key=lambda c: c.metrics["rps"].median, default=None)


def _largest_scale(mine: Sequence[CellDoc]) -> CellDoc | None:
    scale = [c for c in mine if c.scenario == "scale" and c.level]
    return max(scale, key=lambda c: c.level or 0, default=None)


def _row(cells: Sequence[CellDoc], contender: str, variant: str) -> SummaryRow:
    rate = summary_rate(cells)
    at = _find(cells, "http-latency", variant, contender, rate)
    mine = [c for c in cells if c.contender == contender and c.variant == variant]
    latency_rates = [c.level for c in mine if c.scenario == "http-latency" and c.level]
    top = _find(cells, "http-latency", variant, contender, max(latency_rates, default=None))
    best = _best(cells, "http-throughput", variant, contender)
    rss = [c.metrics["rss_proxy_mib"].median for c in mine if "rss_proxy_mib" in c.metrics]
    proxy_cpu = _median(at, "cpu_proxy_us_per_op")
    ebpf_cpu = _median(at, "cpu_ebpf_us_per_op")
    values: dict[str, float | None] = {
        "added_p50_ms": at.delta.get("p50_ms") if at else None,
        "added_p99_ms": at.delta.get("p99_ms") if at else None,
        "p50_ratio": at.ratio.get("p50_ms") if at else None,
        "max_rps": _median(best, "rps"),
        "max_rps_ratio": best.ratio.get("rps") if best else None,
        "rr_tps": _median(_find(cells, "tcp-rr", variant, contender, None), "tps"),
        "stream_gbps": _median(_find(cells, "tcp-stream", variant, contender, None), "gbps"),
        "grpc_rps": _median(_best(cells, "grpc", variant, contender), "rps"),
        "pod_mesh_mib": _median(_largest_scale(mine), "mesh_pss_per_pod_mib"),
        "blast_failed_pct": _median(
            _find(cells, "blast-radius", variant, contender, None), "failed_pct"
        ),
        "recovery_s": _median(_find(cells, "blast-radius", variant, contender, None), "recovery_s"),
        "upgrade_failed": _median(_find(cells, "upgrade", variant, contender, None), "failed"),
        "upgrade_restarts": _median(
            _find(cells, "upgrade", variant, contender, None), "pod_restarts"
        ),
        "proxy_rss_mib": max(rss) if rss else None,
        "proxy_cpu_us_per_req": (None if proxy_cpu is None else proxy_cpu + (ebpf_cpu or 0.0)),
        "loadgen_cpu_pct": _median(top, "cpu_loadgen_pct"),
    }
    return SummaryRow(contender, variant, values)


def summary_rows(
    cells: Sequence[CellDoc], contenders: Sequence[str], variants: Sequence[str]
) -> list[SummaryRow]:
    """One row per (contender, variant) that has any cell, contender-major."""
    present = {(c.contender, c.variant) for c in cells}
    return [
        _row(cells, contender, variant)
        for contender in contenders
        for variant in variants
        if (contender, variant) in present
    ]
