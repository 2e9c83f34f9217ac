"""The report's figures (matplotlib, object API: no pyplot global state, no display needed).

Each function draws one PNG from the results document and returns its path, or None when
the run measured nothing it could show. Error bars are the min–max over repeats; the point
or bar is the median, as in the tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hybridmesh.bench.metrics import CPU_COMPONENTS
from hybridmesh.bench.model import CellDoc, Results, Stat
from hybridmesh.bench.summary import summary_rate
from hybridmesh.lab.workloads._stats import Histogram

__all__ = ["draw_all"]

COLORS = {
    "none": "#7f7f7f",
    "sidecar": "#1f77b4",
    "sidecar+ebpf": "#17becf",
    "kernel": "#2ca02c",
    "node": "#9467bd",
    "envoy-sidecar": "#ff7f0e",
    "sidecar-plaintext": "#aec7e8",
    "envoy-sidecar-mtls": "#d62728",
}
_COMPONENT_COLORS = {
    "loadgen": "#bcbd22",
    "app": "#2ca02c",
    "proxy_client": "#1f77b4",
    "proxy_server": "#9467bd",
    "node_proxy": "#8c564b",
    "ebpf": "#d62728",
}
_COMPONENT_LABELS = {
    "loadgen": "load generator",
    "app": "server app",
    "proxy_client": "client proxy",
    "proxy_server": "server proxy",
    "node_proxy": "node proxies",
    "ebpf": "kernel eBPF",
}
_CDF_QUANTILES = [q / 10 for q in range(0, 1000, 5)] + [99.5, 99.9, 99.95, 99.99, 100.0]


def _color(contender: str) -> str:
    return COLORS.get(contender, "#17becf")


def _err(stat: Stat) -> list[list[float]]:
    return [[stat.median - stat.min], [stat.max - stat.median]]


def _cells(results: Results, scenario: str, variant: str | None = None) -> list[CellDoc]:
    return [
        c
        for c in results.cells
        if c.scenario == scenario and (variant is None or c.variant == variant)
    ]


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _contenders(results: Results) -> list[str]:
    return [c.name for c in results.contenders]


def latency_vs_rate(results: Results, out: Path) -> Path | None:
    variants = results.config.variants
    if not _cells(results, "http-latency"):
        return None
    fig = Figure(figsize=(5.5 * len(variants), 4.2))
    axes = fig.subplots(1, len(variants), squeeze=False)[0]
    for ax, variant in zip(axes, variants, strict=True):
        for contender in _contenders(results):
            cells = sorted(
                (c for c in _cells(results, "http-latency", variant) if c.contender == contender),
                key=lambda c: c.level or 0,
            )
            rates = [c.level or 0 for c in cells]
            for metric, style in (("p50_ms", "-"), ("p99_ms", "--")):
                stats = [c.metrics[metric] for c in cells]
                ax.errorbar(
                    rates, [s.median for s in stats], fmt=style + "o", markersize=3,
                    yerr=[[s.median - s.min for s in stats], [s.max - s.median for s in stats]],
                    color=_color(contender), label=f"{contender} {metric[:3]}", capsize=2,
                )  # fmt: skip
        ax.set(title=f"http-latency, {variant}", xlabel="request rate (req/s)", ylabel="ms")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out / "latency_vs_rate.png")


def _cdf_points(hist_doc: dict[str, Any]) -> tuple[list[float], list[float]]:
    hist = Histogram.from_json(hist_doc)
    xs = [max(hist.percentile(q), 1.0) / 1000 for q in _CDF_QUANTILES]
    return xs, [q / 100 for q in _CDF_QUANTILES]


def latency_cdf(results: Results, out: Path) -> Path | None:
    rate = summary_rate(results.cells)
    variants = results.config.variants
    if rate is None:
        return None
    fig = Figure(figsize=(5.5 * len(variants), 4.2))
    axes = fig.subplots(1, len(variants), squeeze=False)[0]
    for ax, variant in zip(axes, variants, strict=True):
        for cell in _cells(results, "http-latency", variant):
            if cell.level == rate and cell.histogram:
                xs, ys = _cdf_points(cell.histogram)
                ax.step(xs, ys, where="post", color=_color(cell.contender), label=cell.contender)
        ax.set(title=f"latency CDF at {rate} req/s, {variant}", xlabel="latency (ms)")
        ax.set(ylabel="fraction of requests")
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out / "latency_cdf.png")


_THROUGHPUT = (
    ("http-throughput", "rps", "max HTTP req/s (wrk)"),
    ("tcp-rr", "tps", "tcp-rr transactions/s"),
    ("tcp-stream", "gbps", "tcp-stream Gbit/s"),
    ("grpc", "rps", "gRPC req/s (h2load, multiplexed)"),
)


def _grouped_bars(ax: Axes, results: Results, scenario: str, metric: str) -> None:
    contenders, variants = _contenders(results), results.config.variants
    width = 0.8 / max(len(contenders), 1)
    for i, contender in enumerate(contenders):
        xs: list[float] = []
        heights: list[float] = []
        errs: list[list[float]] = [[], []]
        for j, variant in enumerate(variants):
            found = [
                c
                for c in _cells(results, scenario, variant)
                if c.contender == contender and metric in c.metrics
            ]
            if not found:
                continue
            best = max(found, key=lambda c: c.metrics[metric].median).metrics[metric]
            xs.append(j + i * width)
            heights.append(best.median)
            err = _err(best)
            errs[0] += err[0]
            errs[1] += err[1]
        ax.bar(xs, heights, width, yerr=errs, color=_color(contender), label=contender, capsize=3)
    ax.set_xticks([j + width * (len(contenders) - 1) / 2 for j in range(len(variants))])
    ax.set_xticklabels(variants)


def throughput(results: Results, out: Path) -> Path | None:
    present = [t for t in _THROUGHPUT if _cells(results, t[0])]
    if not present:
        return None
    fig = Figure(figsize=(4.5 * len(present), 4.0))
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, (scenario, metric, title) in zip(axes, present, strict=True):
        _grouped_bars(ax, results, scenario, metric)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out / "throughput.png")


def _stacked(ax: Axes, cells: Sequence[CellDoc], parts: Sequence[tuple[str, str]]) -> None:
    """Bars per cell stacked from ``parts``: (metric, component) pairs."""
    names = [f"{c.contender}\n{c.variant}" for c in cells]
    bottoms = [0.0] * len(cells)
    for metric, component in parts:
        values = [c.metrics[metric].median if metric in c.metrics else 0.0 for c in cells]
        ax.bar(
            names, values, bottom=bottoms, label=_COMPONENT_LABELS[component],
            color=_COMPONENT_COLORS[component],
        )  # fmt: skip
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)


def resources(results: Results, out: Path) -> Path | None:
    rate = summary_rate(results.cells)
    cells = [c for c in _cells(results, "http-latency") if c.level == rate]
    if not cells:
        return None
    fig = Figure(figsize=(11, 4.2))
    cpu_ax, mem_ax = fig.subplots(1, 2)
    _stacked(cpu_ax, cells, [(f"cpu_{c}_us_per_op", c) for c in CPU_COMPONENTS])
    cpu_ax.set(title=f"CPU per request at {rate} req/s (stacked)", ylabel="µs/request")
    memory = [
        ("rss_loadgen_mib", "loadgen"),
        ("rss_app_mib", "app"),
        ("rss_proxy_client_mib", "proxy_client"),
        ("rss_proxy_server_mib", "proxy_server"),
        ("rss_node_proxy_mib", "node_proxy"),
    ]
    _stacked(mem_ax, cells, memory)
    mem_ax.set(title=f"peak RSS at {rate} req/s (stacked)", ylabel="MiB")
    return _save(fig, out / "resources.png")


def scale_curves(results: Results, out: Path) -> Path | None:
    """Mesh memory and CPU against pods per node: a sidecar's line climbs, a shared one not."""
    if not _cells(results, "scale"):
        return None
    fig = Figure(figsize=(11, 4.2))
    mem_ax, cpu_ax = fig.subplots(1, 2)
    for ax, metric, title, unit in (
        (mem_ax, "mesh_pss_mib", "mesh memory (PSS) vs pods on the node", "MiB"),
        (cpu_ax, "mesh_cpu_pct", "mesh CPU under light load vs pods", "% of a core"),
    ):
        for contender in _contenders(results):
            cells = sorted(
                (c for c in _cells(results, "scale") if c.contender == contender),
                key=lambda c: c.level or 0,
            )
            stats = [c.metrics[metric] for c in cells if metric in c.metrics]
            if not stats:
                continue
            ax.errorbar(
                [c.level or 0 for c in cells], [s.median for s in stats], fmt="-o", markersize=3,
                yerr=[[s.median - s.min for s in stats], [s.max - s.median for s in stats]],
                color=_color(contender), label=contender, capsize=2,
            )  # fmt: skip
        ax.set(title=title, xlabel="pods on node-1", ylabel=unit)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out / "scale.png")


def _bars(ax: Axes, cells: Sequence[CellDoc], metric: str, title: str, unit: str) -> None:
    found = [c for c in cells if metric in c.metrics]
    stats = [c.metrics[metric] for c in found]
    ax.bar(
        [c.contender for c in found], [s.median for s in stats],
        yerr=[[s.median - s.min for s in stats], [s.max - s.median for s in stats]],
        color=[_color(c.contender) for c in found], capsize=3,
    )  # fmt: skip
    ax.set(title=title, ylabel=unit)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(True, axis="y", alpha=0.3)


def disruption(results: Results, out: Path) -> Path | None:
    """blast-radius (failed share, time to recover) and upgrade (failed, restarts) per contender."""
    panels = [
        ("blast-radius", "failed_pct", "blast radius: failed share of all requests", "%"),
        ("blast-radius", "recovery_s", "blast radius: time to recover", "s"),
        ("upgrade", "failed", "upgrade: failed requests", "count"),
        ("upgrade", "pod_restarts", "upgrade: pod restarts needed", "count"),
    ]
    present = [p for p in panels if _cells(results, p[0])]
    if not present:
        return None
    fig = Figure(figsize=(4.2 * len(present), 4.0))
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, (scenario, metric, title, unit) in zip(axes, present, strict=True):
        _bars(ax, _cells(results, scenario), metric, title, unit)
    return _save(fig, out / "disruption.png")


def draw_all(results: Results, out: Path) -> dict[str, Path]:
    """Every figure the results allow, keyed ``<section>:<what>``: a scenario's name, or
    ``overview`` (beside the summary) or ``resources``."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = {
        "http-latency:percentiles": latency_vs_rate(results, out),
        "http-latency:cdf": latency_cdf(results, out),
        "overview:throughput": throughput(results, out),
        "resources:cpu-memory": resources(results, out),
        "scale:curves": scale_curves(results, out),
        # shown in the blast-radius section, or in upgrade's when only that one ran
        ("blast-radius" if _cells(results, "blast-radius") else "upgrade") + ":bars": (
            disruption(results, out)
        ),
    }
    return {key: path for key, path in drawn.items() if path is not None}
