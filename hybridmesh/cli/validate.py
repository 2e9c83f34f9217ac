"""`hybridmesh validate FILE`: check a topology without starting anything.

Exit 0 and a summary when the file is valid; exit 1 and every problem, one ``FILE:LINE:
message`` per line (the format editors jump to), when it is not; exit 2 when the file
cannot be read at all.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from hybridmesh.cli._output import OutputFormat, OutputOption, console, fail, print_json
from hybridmesh.resources import Problem, ResourceError, Topology, load_text

__all__ = ["register", "summarize"]


def summarize(topology: Topology) -> dict[str, Any]:
    """What a valid topology contains: counts per kind, nodes, and each workload's placement."""
    placements = {w.ref: topology.placement_of(w) for w in topology.workloads}
    return {
        "source": topology.source,
        "kinds": topology.kind_counts(),
        "nodes": [n.name for n in topology.nodes],
        "pods": sum(w.spec.replicas for w in topology.workloads),
        "defaultPlacement": topology.mesh.spec.default_placement,
        "placements": dict(Counter(placements.values())),
        "workloads": [
            {"name": w.ref, "replicas": w.spec.replicas, "placement": placements[w.ref]}
            for w in topology.workloads
        ],
    }


def _read(file: str) -> tuple[str, str]:
    """``(text, source name)``; ``-`` is standard input."""
    if file == "-":
        return sys.stdin.read(), "<stdin>"
    path = Path(file)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        fail(f"{file} {what}", "pass a topology YAML file (or - to read standard input)", code=2)
    try:
        return path.read_text(encoding="utf-8"), file
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}", "check the file's permissions and encoding", code=2)


def _print_summary(summary: dict[str, Any]) -> None:
    kinds = ", ".join(f"{n} {k}" for k, n in summary["kinds"].items()) or "no resources"
    console.print(f"[green]valid[/]: {summary['source']} ({kinds})", highlight=False)
    table = Table("workload", "replicas", "placement", title=None, box=None)
    for workload in summary["workloads"]:
        table.add_row(workload["name"], str(workload["replicas"]), workload["placement"])
    if summary["workloads"]:
        console.print(table)
    nodes = ", ".join(summary["nodes"])
    console.print(f"{summary['pods']} pods on {len(summary['nodes'])} nodes ({nodes})")


def _print_problems(problems: list[Problem], source: str) -> None:
    for problem in problems:
        console.print(str(problem), highlight=False, markup=False, soft_wrap=True)
    count = len(problems)
    console.print(f"[red]invalid[/]: {count} problem{'s' if count != 1 else ''} in {source}")


def validate(
    file: str = typer.Argument(..., help="Topology YAML file to check (- for standard input)."),
    output: OutputFormat = OutputOption,
) -> None:
    """Check a topology file: syntax, schema and cross-references, every problem at once."""
    text, source = _read(file)
    try:
        topology = load_text(text, source)
    except ResourceError as exc:
        if output is OutputFormat.json:
            problems = [p.to_json() for p in exc.problems]
            print_json({"valid": False, "problems": problems, "summary": None})
        else:
            _print_problems(exc.problems, source)
        raise typer.Exit(1) from None
    summary = summarize(topology)
    if output is OutputFormat.json:
        print_json({"valid": True, "problems": [], "summary": summary})
    else:
        _print_summary(summary)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("validate")(validate)
