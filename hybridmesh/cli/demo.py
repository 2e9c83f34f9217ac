"""`hybridmesh demo`: the embedded topology, real traffic, a table per service edge."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer
from rich.table import Table

from hybridmesh.cli._output import (
    OutputFormat,
    OutputOption,
    console,
    err_console,
    fail,
    print_json,
)

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    duration: float = typer.Option(5.0, help="Seconds of traffic to observe."),
    placement: str | None = typer.Option(None, help="Override every workload's placement."),
    keep: bool = typer.Option(False, "--keep", help="Leave the lab running afterwards."),
    output: OutputFormat = OutputOption,
) -> None:
    """Bring up the demo shop on 2 nodes, drive traffic, print per-edge success and latency."""
    from importlib.resources import files

    from hybridmesh.lab import demo as demo_mod
    from hybridmesh.lab import runner

    text = (files("hybridmesh.resources") / "topologies" / "demo.yaml").read_text()
    if placement:
        text = demo_mod.with_placement(text, placement)
    with tempfile.TemporaryDirectory(prefix="hm-demo-") as tmp:
        topo = Path(tmp) / "demo.yaml"
        topo.write_text(text)
        started = time.monotonic()
        try:
            status = runner.lab_up(topo, timeout=120)
        except runner.LabUpError as exc:
            runner.lab_down()
            fail(exc.message, exc.hint)
    up_s = time.monotonic() - started
    err_console.print(
        f"lab up in {up_s:.2f}s: {len(status['pods'])} pods on "
        f"{len(status['nodes'])} nodes; observing traffic for {duration:.0f}s…"
    )
    try:
        rows = demo_mod.observe(status["pods"], duration)
    finally:
        if not keep:
            runner.lab_down()
    if output is OutputFormat.json:
        print_json({"upSeconds": round(up_s, 3), "edges": [r.to_json() for r in rows]})
    else:
        table = Table(
            "SOURCE",
            "DESTINATION",
            "REQUESTS",
            "RPS",
            "SUCCESS",
            "P50",
            "P99",
            title="service edges (client side)",
            title_justify="left",
        )
        for r in rows:
            table.add_row(
                r.source,
                r.destination,
                str(r.requests),
                f"{r.rps:.1f}",
                f"{100 * r.success_rate:.2f}%",
                f"{r.p50_ms:.2f}ms",
                f"{r.p99_ms:.2f}ms",
            )
        console.print(table)
        console.print(
            "lab kept running: `hybridmesh lab status`, `hybridmesh lab down`"
            if keep
            else "lab removed"
        )
    if not rows or any(r.requests == 0 for r in rows):
        fail("no traffic was observed on some edge", "see `hybridmesh demo --keep` and `lab logs`")
