"""`hybridmesh ebpf status`: what each node agent has in the kernel, and what it costs.

Per node and datapath: programs (attach point, id, runs, kernel CPU time, ns per run) and maps
(fill level). Run counts come from the kernel's BPF run-time stats, which every agent keeps on
while it runs (it holds a BPF_ENABLE_STATS fd — no sysctl left behind after a crash).
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hybridmesh.agent import client as agents
from hybridmesh.cli._output import OutputFormat, OutputOption, console, fail, print_json

__all__ = ["collect", "register", "render_status"]

ebpf_app = typer.Typer(help="What the node agents loaded into the kernel.", no_args_is_help=True)


def collect(nodes: list[str]) -> list[dict[str, Any]]:
    """Each node's agent status; a node whose agent does not answer gets an ``error``."""
    out = []
    for node in nodes:
        try:
            out.append(agents.status(node))
        except agents.AgentUnavailable as exc:
            out.append({"node": node, "error": str(exc), "datapaths": []})
    return out


def _ns_per_run(program: dict[str, Any]) -> str:
    runs = int(program.get("runCount") or 0)
    return f"{int(program.get('runTimeNs') or 0) / runs:.0f}" if runs else "-"


def _fill(m: dict[str, Any]) -> str:
    entries = m.get("entries")
    return f"{'-' if entries is None else entries}/{m.get('maxEntries')}"


def _program_table(node: dict[str, Any]) -> Table:
    table = Table(title=f"node {node['node']}: programs", title_justify="left")
    for col in ("DATAPATH", "PROGRAM", "ATTACH", "ID", "RUNS", "RUN TIME NS", "NS/RUN"):
        table.add_column(col, justify="right" if col in ("ID", "RUNS", "RUN TIME NS", "NS/RUN")
                         else "left")  # fmt: skip
    for dp in node["datapaths"]:
        if dp.get("error"):
            table.add_row(dp["name"], "-", f"[red]{escape(dp['error'])}[/]", "", "", "", "")
        for p in dp.get("programs") or ():
            table.add_row(dp["name"], p["name"], p["attach"], str(p["id"]), str(p["runCount"]),
                          str(p["runTimeNs"]), _ns_per_run(p))  # fmt: skip
    return table


def _map_table(node: dict[str, Any]) -> Table:
    table = Table(title=f"node {node['node']}: maps", title_justify="left")
    for col in ("DATAPATH", "MAP", "KIND", "ENTRIES", "SYNC"):
        table.add_column(col)
    for dp in node["datapaths"]:
        sync = dp.get("sync") or {}
        state = "ok" if sync.get("ok") else f"[red]failing ({sync.get('errors', 0)})[/]"
        if sync.get("ok") and sync.get("errors"):
            state = f"ok (after {sync['errors']} errors)"
        for m in dp.get("maps") or ():
            table.add_row(dp["name"], m["name"], m["kind"], _fill(m), state)
        if sync and not sync.get("ok"):
            why = escape(sync.get("lastError") or "?")
            table.add_row(dp["name"], "", "", "", f"{state}: {why}")
    return table


def render_status(nodes: list[dict[str, Any]], out: Console) -> None:
    for node in nodes:
        if node.get("error"):
            out.print(f"[red]node {node['node']}: {escape(node['error'])}[/]", highlight=False)
            continue
        out.print(_program_table(node))
        out.print(_map_table(node))


@ebpf_app.command("status")
def status(
    node: list[str] = typer.Option(None, "--node", "-n", help="Only this node (repeatable)."),
    output: OutputFormat = OutputOption,
) -> None:
    """Programs, attach points, map fill levels and each program's kernel CPU time."""
    nodes = list(node) if node else agents.known_nodes()
    if not nodes:
        fail("no node agent is running", "start a lab: `hybridmesh lab up` (or `hybridmesh demo`)")
    result = collect(nodes)
    if output is OutputFormat.json:
        print_json({"nodes": result})
    else:
        render_status(result, console)
    if any(n.get("error") for n in result):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(ebpf_app, name="ebpf")
