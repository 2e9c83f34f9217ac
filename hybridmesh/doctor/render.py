"""The human form of a :class:`Report`, in `linkerd check`'s shape.

Checks are grouped under their category; a passing check is one line (``√ name — detail``), a
failing one adds its detail and the hint indented beneath it, with ``×`` when it is fatal and
``‼`` when it is only a warning. Built from :class:`rich.text.Text`, never markup strings, so a
detail containing ``[brackets]`` (stderr often does) prints verbatim.
"""

from __future__ import annotations

from collections.abc import Iterator

from rich.console import Console
from rich.text import Text

from hybridmesh.doctor.model import CheckResult, Report

__all__ = ["FAIL", "OK", "WARN", "render", "report_lines", "summary"]

OK, FAIL, WARN = "√", "×", "‼"


def _mark(result: CheckResult) -> Text:
    if result.ok:
        return Text(OK, style="bold green")
    if result.is_warning:
        return Text(WARN, style="bold yellow")
    return Text(FAIL, style="bold red")


def _result_lines(result: CheckResult) -> Iterator[Text]:
    line = Text.assemble(_mark(result), " ", result.check.name)
    if result.ok:
        if result.outcome.detail:
            line.append(f" — {result.outcome.detail}", style="dim")
        yield line
        return
    yield line
    if result.outcome.detail:
        yield Text(f"    {result.outcome.detail}")
    yield Text.assemble("    ", ("hint:", "yellow"), f" {result.check.hint}")


def summary(report: Report) -> Text:
    """``Status check results are √ (20 passed, 1 warning)``: the verdict and the counts."""
    passed = sum(r.ok for r in report.results)
    warnings = sum(r.is_warning for r in report.results)
    failed = len(report.results) - passed - warnings
    counts = f"{passed} passed"
    if warnings:
        counts += f", {warnings} warning{'s' if warnings > 1 else ''}"
    if failed:
        counts += f", {failed} failed"
    mark = Text(OK, style="bold green") if report.ok else Text(FAIL, style="bold red")
    return Text.assemble("Status check results are ", mark, f" ({counts})")


def report_lines(report: Report) -> Iterator[Text]:
    """Every line of the human report, category headers included, in table order."""
    category = None
    for result in report.results:
        if result.check.category != category:
            category = result.check.category
            if category != report.results[0].check.category:
                yield Text("")
            yield Text(category, style="bold")
            yield Text("-" * len(category))
        yield from _result_lines(result)
    yield Text("")
    yield summary(report)


def render(report: Report, console: Console) -> None:
    for line in report_lines(report):
        console.print(line, highlight=False, soft_wrap=True)
