"""`hybridmesh bench`: placements (and Envoy as a peer) side by side on this machine.

Brings up its own lab, measures every scenario with the contenders alternating, takes the
lab down, and writes results.json, results.csv, report.md, report.html and plots/ to --out.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hybridmesh.cli._output import (
    OutputFormat,
    OutputOption,
    console,
    err_console,
    fail,
    print_json,
)

if TYPE_CHECKING:
    from hybridmesh.bench.model import Results, SampleDoc
    from hybridmesh.bench.runner import BenchOptions
    from hybridmesh.bench.schedule import Run

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def _names(values: list[str] | None) -> list[str]:
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def bench(
    *,
    out: Path | None = typer.Option(None, "--out", help="Directory for results and report."),
    scenarios: list[str] | None = typer.Option(
        None, "--scenarios", "-s", help="Comma list (default: every implemented one)."
    ),
    contenders: list[str] | None = typer.Option(
        None, "--contenders", "-c", help="Comma list; none is always added (the baseline)."
    ),
    quick: bool = typer.Option(False, "--quick", help="Short profile (CI): under 2 minutes."),
    repeats: int | None = typer.Option(None, help="Repeats per cell and contender."),
    duration: float | None = typer.Option(None, help="Measured seconds per run."),
    warmup: float | None = typer.Option(None, help="Warm-up seconds per run (discarded)."),
    rates: list[str] | None = typer.Option(None, help="http-latency rates, comma list."),
    envoy_concurrency: int = typer.Option(2, help="Envoy worker threads (Istio's default: 2)."),
    calibrate: bool = typer.Option(True, help="Compare loadgen with h2load on none."),
    wait: float = typer.Option(
        0.0, help="Seconds to wait for another lab to leave the machine (0: fail at once)."
    ),
    report_only: bool = typer.Option(
        False, "--report-only", help="Re-render the report from DIR/results.json; no run."
    ),
    list_: bool = typer.Option(False, "--list", help="List scenarios and contenders."),
    output: OutputFormat = OutputOption,
) -> None:
    """Measure latency, throughput, CPU and memory of each placement against `none`."""
    if list_:
        _print_catalog(output)
        return
    if out is None:
        fail("--out DIR is required", "e.g. hybridmesh bench --quick --out bench-out", code=2)
    from hybridmesh.bench.report import ReportError, load_results, write_report
    from hybridmesh.bench.runner import BenchOptions

    if report_only:
        try:
            results = load_results(out)
        except ReportError as exc:
            fail(exc.message, exc.hint)
    else:
        options = BenchOptions(
            out=out,
            scenarios=_names(scenarios),
            contenders=_names(contenders),
            quick=quick,
            repeats=repeats,
            duration_s=duration,
            warmup_s=warmup,
            rates=_rates(rates),
            envoy_concurrency=envoy_concurrency,
            calibrate=calibrate,
            wait_s=wait,
        )
        results = _measure(out, options, output)
    try:
        files = write_report(results, out)
    except OSError as exc:
        fail(f"cannot write the report into {out}: {exc.strerror}", "check the directory")
    if output is OutputFormat.json:
        print_json(_summary_json(results))
    else:
        _print_summary(results)
        console.print(f"report: {files.html} (and {files.markdown.name}, {files.csv.name}, plots/)")
    if results.failures:
        fail(
            f"{len(results.failures)} of {len(results.failures) + len(results.samples)} runs "
            "failed; the report lists them",
            f"see 'Failed runs' in {files.markdown}",
        )


def _rates(values: list[str] | None) -> list[int]:
    try:
        return [int(r) for r in _names(values)]
    except ValueError:
        fail(f"--rates must be integers (req/s), got {values}", "e.g. --rates 100,1000", code=2)


def _measure(out: Path, options: BenchOptions, output: OutputFormat) -> Results:
    from hybridmesh.bench.bed import BedError
    from hybridmesh.bench.envoy_sidecar import EnvoyError
    from hybridmesh.bench.measure import RunError
    from hybridmesh.bench.runner import run_bench
    from hybridmesh.bench.scenarios import BenchConfigError
    from hybridmesh.lab._sh import LabError

    progress = _RichProgress(enabled=output is OutputFormat.table)
    try:
        with progress:
            return run_bench(options, progress)
    except (BenchConfigError, BedError, RunError, EnvoyError, LabError) as exc:
        fail(exc.message, exc.hint)
    except OSError as exc:
        fail(f"the bench failed: {exc}", f"the samples so far are in {out}/results.json")
    except KeyboardInterrupt:
        fail("interrupted; the lab was taken down", f"partial samples are in {out}/results.json")


_SHOWN = (
    "rps", "p50_ms", "p99_ms", "tps", "gbps", "mesh_pss_mib", "mesh_cpu_pct", "failed_pct",
    "recovery_s", "pod_restarts", "node_restarts",
)  # fmt: skip
"""The figures a finished run prints on its progress line (those it has)."""


class _RichProgress:
    """A progress bar over the planned runs on a terminal; one line per run otherwise (CI)."""

    def __init__(self, enabled: bool) -> None:
        self._plain = enabled and not err_console.is_terminal
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=not enabled or self._plain,
            transient=False,
        )
        self._task = self._bar.add_task("preparing", total=None)
        self._done = 0
        self._total = 0
        self._last_phase = ""

    def __enter__(self) -> _RichProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    def phase(self, message: str) -> None:
        self._bar.update(self._task, description=message)
        if self._plain and message != self._last_phase:
            err_console.print(message, highlight=False, markup=False)
        self._last_phase = message

    def planned(self, total: int) -> None:
        self._total = total
        self._bar.update(self._task, total=total)

    def run_started(self, run: Run) -> None:
        label = escape(f"{run.cell.label()} [{run.contender}]")
        self._bar.update(self._task, description=label)

    def run_done(self, run: Run, sample: SampleDoc) -> None:
        self._done += 1
        self._bar.advance(self._task)
        if self._plain:
            m = sample.metrics
            shown = ", ".join(f"{k} {m[k]:.3g}" for k in _SHOWN if k in m)
            err_console.print(
                f"[{self._done}/{self._total}] {run.cell.label()} [{run.contender}]: {shown}",
                highlight=False,
                markup=False,
            )

    def run_failed(self, run: Run, error: str) -> None:
        self._done += 1
        self._bar.advance(self._task)
        err_console.print(
            f"[{self._done}/{self._total}] {run.cell.label()} [{run.contender}] FAILED: {error}",
            highlight=False,
            markup=False,
        )


def _summary_json(results: Results) -> dict[str, Any]:
    from hybridmesh.bench.summary import summary_rows

    rows = summary_rows(
        results.cells, [c.name for c in results.contenders], results.config.variants
    )
    return {
        "summary": [{"contender": r.contender, "variant": r.variant, **r.values} for r in rows],
        "runs": len(results.samples),
        "failures": [f.model_dump() for f in results.failures],
    }


def _print_summary(results: Results) -> None:
    from hybridmesh.bench.render import fmt_number, fmt_ratio
    from hybridmesh.bench.summary import SUMMARY_COLUMNS, summary_rate, summary_rows

    rows = summary_rows(
        results.cells, [c.name for c in results.contenders], results.config.variants
    )
    keys = [k for k in SUMMARY_COLUMNS if any(r.values.get(k) is not None for r in rows)]
    rate = summary_rate(results.cells)
    table = Table(
        "CONTENDER", "VARIANT",
        *(f"{SUMMARY_COLUMNS[k][0].upper()}\n{SUMMARY_COLUMNS[k][1]}" for k in keys),
        title="bench summary" + (f" (latency at {rate} req/s; added = contender − none)"
                                 if rate else ""),
        title_justify="left",
    )  # fmt: skip
    for r in rows:
        values = [
            fmt_ratio(r.values[k]) if k.endswith("_ratio") else fmt_number(r.values[k])
            for k in keys
        ]
        table.add_row(r.contender, r.variant, *values)
    console.print(table)


def _print_catalog(output: OutputFormat) -> None:
    from hybridmesh.bench.bed import unavailable_contenders
    from hybridmesh.bench.scenarios import CONTENDERS, SCENARIOS

    missing = unavailable_contenders(list(CONTENDERS.values()))
    data = {
        "scenarios": [
            {"name": s.name, "summary": s.summary, "implemented": s.implemented}
            for s in SCENARIOS.values()
        ],
        "contenders": [
            {"name": c.name, "description": c.description, "unavailable": missing.get(c.name)}
            for c in CONTENDERS.values()
        ],
    }
    if output is OutputFormat.json:
        print_json(data)
        return
    table = Table("SCENARIO", "WHAT", "STATUS", title="scenarios", title_justify="left")
    for s in SCENARIOS.values():
        table.add_row(s.name, s.summary, "ready" if s.implemented else "not yet")
    console.print(table)
    table = Table("CONTENDER", "WHAT", "STATUS", title="contenders", title_justify="left")
    for c in CONTENDERS.values():
        table.add_row(c.name, c.description, missing.get(c.name, "ready"))
    console.print(table)
