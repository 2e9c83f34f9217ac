"""`hybridmesh check`: can this host run the lab, eBPF and the proxies? (`linkerd check` shape)

Exits non-zero when a fatal check fails, so scripts and CI can gate on it.
"""

from __future__ import annotations

import typer

from hybridmesh.cli._output import OutputFormat, OutputOption, console, print_json
from hybridmesh.doctor import run_checks
from hybridmesh.doctor.render import render

__all__ = ["register"]


def check(output: OutputFormat = OutputOption) -> None:
    """Check that this host can run hybridmesh: privileges, kernel, cgroups, network, tools."""
    report = run_checks()
    if output is OutputFormat.json:
        print_json(report.to_json())
    else:
        render(report, console)
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("check")(check)
