"""results.csv and report.md from a results document (pure: text in, text out).

Every figure is shown as ``median (min–max)`` over the repeats, beside its ratio to
``none``. The CSV is long-form (one row per cell and metric) so a spreadsheet or pandas can
pivot it any way; the markdown is what a person reads, and report.html is made from it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

from hybridmesh.bench.headlines import headlines
from hybridmesh.bench.loadcheck import MAX_LOADGEN_PCT, MIN_TARGET_SHARE, load_checks
from hybridmesh.bench.metrics import METRICS, SCENARIO_METRICS
from hybridmesh.bench.model import CellDoc, Results, Stat
from hybridmesh.bench.summary import SUMMARY_COLUMNS, summary_rate, summary_rows

__all__ = [
    "CSV_COLUMNS",
    "fmt_number",
    "fmt_ratio",
    "fmt_stat",
    "markdown_table",
    "report_markdown",
    "results_csv",
]

CSV_COLUMNS = (
    "scenario", "variant", "level", "contender", "metric", "unit",
    "median", "min", "max", "n", "ratio_to_none", "delta_to_none",
)  # fmt: skip

_TABLE_METRICS: dict[str, tuple[str, ...]] = {
    "http-latency": (
        "p50_ms", "p90_ms", "p99_ms", "p999_ms", "rps", "errors",
        "cpu_proxy_us_per_op", "rss_proxy_mib", "cpu_loadgen_pct",
    ),
    "http-throughput": ("rps", "p50_ms", "p99_ms", "errors", "cpu_proxy_us_per_op",
                        "rss_proxy_mib", "cpu_loadgen_pct"),
    "tcp-rr": ("tps", "rtt_p50_us", "rtt_p99_us", "cpu_proxy_us_per_op", "rss_proxy_mib",
               "cpu_loadgen_pct"),
    "tcp-stream": ("gbps", "cpu_proxy_us_per_op", "rss_proxy_mib", "cpu_loadgen_pct"),
    "grpc": ("rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "errors", "cpu_proxy_us_per_op",
             "rss_proxy_mib", "cpu_loadgen_pct"),
    "scale": ("mesh_pss_mib", "mesh_pss_per_pod_mib", "app_pss_mib", "mesh_cpu_pct",
              "mesh_cpu_per_pod_pct", "ebpf_cpu_pct", "rps", "errors", "cpu_loadgen_pct"),
    "blast-radius": ("failed_pct", "failed_affected", "failed_unaffected", "recovery_s",
                     "recovered", "requests"),
    "upgrade": ("pod_restarts", "node_restarts", "failed", "failed_pct", "upgrade_s",
                "requests"),
    "tls-handshake": ("handshakes_per_core_s", "handshakes_per_s", "cpu_proxy_server_us_per_op",
                      "errors", "rss_proxy_server_mib", "cpu_loadgen_pct"),
}  # fmt: skip
_FLAG = " ⚠"


def fmt_number(value: float | None) -> str:
    """Three significant digits, thousands grouped above 10 000; ``—`` for no value."""
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value:,.0f}"
    if magnitude >= 100 or value == int(value):
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_stat(stat: Stat) -> str:
    if stat.n == 1 or stat.min == stat.max:
        return fmt_number(stat.median)
    return f"{fmt_number(stat.median)} ({fmt_number(stat.min)}–{fmt_number(stat.max)})"


def fmt_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"×{ratio:.2f}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured table; pipes inside cells escaped."""
    lines = ["| " + " | ".join(_escape(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_csv(results: Results) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for cell in results.cells:
        for name, stat in cell.metrics.items():
            ratio, delta = cell.ratio.get(name), cell.delta.get(name)
            writer.writerow([
                cell.scenario, cell.variant, "" if cell.level is None else cell.level,
                cell.contender, name, METRICS[name].unit if name in METRICS else "",
                repr(stat.median), repr(stat.min), repr(stat.max), stat.n,
                "" if ratio is None else repr(ratio), "" if delta is None else repr(delta),
            ])  # fmt: skip
    return out.getvalue()


def _summary_table(results: Results) -> str:
    names = [c.name for c in results.contenders]
    rows = summary_rows(results.cells, names, results.config.variants)
    keys = [k for k in SUMMARY_COLUMNS if any(r.values.get(k) is not None for r in rows)]
    headers = [
        "contender",
        "variant",
        *(f"{SUMMARY_COLUMNS[k][0]} ({SUMMARY_COLUMNS[k][1]})" for k in keys),
    ]
    body = []
    for row in rows:
        cells = [
            fmt_ratio(row.values[k]) if k.endswith("_ratio") else fmt_number(row.values[k])
            for k in keys
        ]
        body.append([row.contender, row.variant, *cells])
    return markdown_table(headers, body)


def _headline_lines(results: Results) -> list[str]:
    lines = headlines(results.cells, results.config.variants)
    return [*(f"- {line}" for line in lines), ""] if lines else []


def _cell_rows(
    cells: Sequence[CellDoc],
    metrics: Sequence[str],
    unit: str,
    flagged: set[tuple[str, str, int | None, str]],
) -> list[list[str]]:
    rows = []
    for cell in cells:
        flag = _FLAG if (cell.scenario, cell.variant, cell.level, cell.contender) in flagged else ""
        level = "" if cell.level is None else f"{cell.level} {unit}".strip()
        values = []
        for m in metrics:
            if m not in cell.metrics:
                values.append("—")
                continue
            ratio = cell.ratio.get(m)
            suffix = (
                f" {fmt_ratio(ratio)}" if ratio is not None and cell.contender != "none" else ""
            )
            mark = flag if m in ("rps", "cpu_loadgen_pct") else ""
            values.append(fmt_stat(cell.metrics[m]) + suffix + mark)
        rows.append([cell.variant, level, cell.contender, *values])
    return rows


def _scenario_section(results: Results, name: str, images: Mapping[str, str]) -> list[str]:
    doc = next(s for s in results.scenarios if s.name == name)
    cells = [c for c in results.cells if c.scenario == name]
    metrics = [m for m in _TABLE_METRICS.get(name, SCENARIO_METRICS.get(name, ())) if m in METRICS]
    headers = [
        "variant",
        "level",
        "contender",
        *(f"{METRICS[m].label} ({METRICS[m].unit.replace('op', doc.op_unit)})" for m in metrics),
    ]
    parts = [f"### {name}", "", doc.description, ""]
    flagged = {(c.scenario, c.variant, c.level, c.contender) for c in load_checks(cells)
               if not c.ok}  # fmt: skip
    parts += [markdown_table(headers, _cell_rows(cells, metrics, doc.level_unit, flagged)), ""]
    for key, path in images.items():
        if key.startswith(name + ":"):
            parts += [f"![{key}]({path})", ""]
    return parts


def _machine_section(results: Results) -> list[str]:
    m, v = results.machine, results.versions
    commit = (v.git_commit or "unknown")[:12] + (
        " (with uncommitted changes)" if v.git_dirty else ""
    )
    rows = [
        ["kernel", m.kernel], ["OS", m.os], ["CPU", f"{m.cpu_model}, {m.cores} cores"],
        ["memory", f"{m.memory_bytes / 2**30:.1f} GiB"],
        ["load average (start → end)", f"{m.loadavg_start} → {m.loadavg_end}"],
        ["python", v.python], ["hybridmesh", f"{v.hybridmesh}, commit {commit}"],
        ["envoy", v.envoy or "—"], ["wrk", v.wrk or "—"], ["h2load", v.h2load or "—"],
    ]  # fmt: skip
    return ["## Machine and versions", "", markdown_table(["", ""], rows), ""]


def _method_section(results: Results) -> list[str]:
    c = results.config
    lines = [
        "## Method",
        "",
        f"- Profile `{c.profile}`: each run warms up for {c.warmup_s:g} s (discarded) and "
        f"measures {c.duration_s:g} s; every cell is measured {c.repeats}× per contender.",
        "- Contenders alternate within every cell (A B A B …), so drift on the machine is "
        "spread over all of them; figures are the median over repeats with (min–max).",
        "- Ratios (×) are contender / none of the medians; *added* figures are contender − none.",
        "- CPU is read from the pods' cgroups: the client pod's app leaf (the load tool), the "
        "server's app leaf, and each pod's proxy leaf; µs/op is CPU time over operations in "
        "the window. Peak RSS is the sum of VmHWM of the proxy processes, reset when the "
        "window opens. Kernel eBPF CPU is the run_time_ns of hm_* programs "
        "(kernel.bpf_stats_enabled on for the bench).",
        "- A contender's proxy must have carried the run's traffic (Envoy's request counters, "
        "proxy CPU > 0), or the run fails instead of reporting a bypass as zero overhead.",
        f"- Command: `{c.command}`",
        "",
        "Contenders:",
        "",
    ]
    for contender in results.contenders:
        details = ", ".join(f"{k}: {v}" for k, v in contender.details.items())
        lines.append(
            f"- `{contender.name}` — {contender.description}" + (f" ({details})" if details else "")
        )
    return [*lines, ""]


def _load_check_section(results: Results) -> list[str]:
    checks = load_checks(results.cells)
    if not checks:
        return []
    bad = [c for c in checks if not c.ok]
    base = [c for c in checks if c.contender == "none" and c.target_rps is not None]
    top = max((c.loadgen_cpu_pct or 0.0 for c in checks), default=0.0)
    reached = sum(1 for c in base if not any("target" in p for p in c.problems))
    lines = [
        "## Load generator check",
        "",
        f"- The baseline (`none`) reached its target rate in {reached} of {len(base)} "
        f"open-loop cells (≥ {MIN_TARGET_SHARE:.0%} of the rate asked; every contender's "
        "cells are checked the same way).",
        f"- The load generator used at most {fmt_number(top)}% of a core in any cell "
        f"(flagged above {MAX_LOADGEN_PCT:g}%: closed-loop maxima would then be the client's).",
    ]
    if not bad:
        return [*lines, "- No cell is flagged.", ""]
    lines += [f"- {len(bad)} {'cell is' if len(bad) == 1 else 'cells are'} flagged "
              "(⚠ in the tables):", ""]  # fmt: skip
    rows = [
        [c.scenario, c.variant, "" if c.level is None else str(c.level), c.contender,
         fmt_number(c.target_rps), fmt_number(c.achieved_rps), fmt_number(c.loadgen_cpu_pct),
         "; ".join(c.problems)]
        for c in bad
    ]  # fmt: skip
    headers = ["scenario", "variant", "level", "contender", "target", "achieved",
               "loadgen CPU (%)", "problem"]  # fmt: skip
    return [*lines, markdown_table(headers, rows), ""]


def _calibration_section(results: Results) -> list[str]:
    if not results.calibration:
        return []
    headers = [
        "tool",
        "variant",
        "rate",
        "requests",
        "p50 (ms)",
        "p90 (ms)",
        "p99 (ms)",
        "p99.9 (ms)",
        "send lag p50/p99 (ms)",
        "service p50/p99 (ms)",
    ]
    rows = []
    for cal in results.calibration:
        lag = (
            "—"
            if cal.send_lag_p50_ms is None
            else f"{fmt_number(cal.send_lag_p50_ms)} / {fmt_number(cal.send_lag_p99_ms)}"
        )
        svc = (
            "—"
            if cal.service_p50_ms is None
            else f"{fmt_number(cal.service_p50_ms)} / {fmt_number(cal.service_p99_ms)}"
        )
        rows.append(
            [
                cal.tool,
                cal.variant,
                str(cal.rate),
                str(cal.requests),
                *(fmt_number(x) for x in (cal.p50_ms, cal.p90_ms, cal.p99_ms, cal.p999_ms)),
                lag,
                svc,
            ]
        )
    return [
        "## Load generator calibration",
        "",
        "http-latency uses hybridmesh's open-loop loadgen, which times each request from when "
        "it was *due*; `h2load --h1 --rps` times from when it was *sent*, so a request that "
        "waited for a busy connection hides its wait (coordinated omission). When nothing "
        "queues, h2load is the more precise clock; under queueing only loadgen tells the truth, "
        "which is why it measures the latency scenario. Both ran on `none` at the same rate:",
        "",
        markdown_table(headers, rows),
        "",
        *_calibration_findings(results),
    ]


def _calibration_findings(results: Results) -> list[str]:
    """The measured price of loadgen, per variant, in words."""
    lines = []
    for variant in dict.fromkeys(c.variant for c in results.calibration):
        tools = {c.tool: c for c in results.calibration if c.variant == variant}
        h2, lg = tools.get("h2load"), tools.get("loadgen")
        if h2 is None or lg is None or lg.send_lag_p50_ms is None:
            continue
        lines.append(
            f"- {variant}: loadgen reads {fmt_number(lg.p50_ms - h2.p50_ms)} ms higher at p50 "
            f"and {fmt_number(lg.p99_ms - h2.p99_ms)} ms at p99 than h2load; its own send lag "
            f"is {fmt_number(lg.send_lag_p50_ms)} ms at p50 and "
            f"{fmt_number(lg.send_lag_p99_ms)} ms at p99. That lag is the same whichever "
            "contender is measured, so *added* latency (contender − none) does not contain it; "
            "ratios are diluted by it, and p99 differences smaller than its p99 are noise."
        )
    return [*lines, ""] if lines else []


def report_markdown(results: Results, images: Mapping[str, str]) -> str:
    """The whole report; ``images`` maps ``<scenario>:<what>`` (or ``resources:...``) to paths."""
    rate = summary_rate(results.cells)
    measured = [s for s in results.scenarios if s.measured]
    contenders = ", ".join(c.name for c in results.contenders)
    parts = [
        f"# hybridmesh bench — {results.created_at}",
        "",
        f"{len(results.samples)} runs, contenders: {contenders}; "
        f"profile `{results.config.profile}`.",
        "",
        "## Summary",
        "",
        (f"Latency figures at {rate} req/s. " if rate else "") + "Added = contender − none.",
        "",
        _summary_table(results),
        "",
        *_headline_lines(results),
        *(f"![{k}]({p})\n" for k, p in images.items() if k.startswith("overview:")),
    ]
    parts += _machine_section(results) + _method_section(results)
    parts += ["## Results", ""]
    for scenario in measured:
        parts += _scenario_section(results, scenario.name, images)
    resources = [f"![{k}]({p})" for k, p in images.items() if k.startswith("resources:")]
    if resources:
        parts += ["### Resources per component", "", *(r + "\n" for r in resources)]
    parts += _load_check_section(results)
    parts += _calibration_section(results)
    if results.failures:
        parts += ["## Failed runs", "", "These runs could not be measured; the bench went on.", ""]
        rows = [
            [f.scenario, f.variant, "" if f.level is None else str(f.level), f.contender,
             str(f.repeat), " ".join(f.error.split())]
            for f in results.failures
        ]  # fmt: skip
        headers = ["scenario", "variant", "level", "contender", "repeat", "error"]
        parts += [markdown_table(headers, rows), ""]
    pending = [s for s in results.scenarios if not s.implemented]
    if pending:
        parts += ["## Not yet measured", ""]
        parts += [f"- `{s.name}` ({s.summary}): not yet" for s in pending] + [""]
    if results.notes:
        parts += ["## Notes", "", *(f"- {n}" for n in results.notes), ""]
    return "\n".join(parts)
