"""`hybridmesh node status|upgrade`: the lab's node proxies (placement ``node``).

The lab daemon supervises the node proxies, so it does the upgrading: it starts a new process
with ``--takeover``, which receives the running proxy's listening sockets over SCM_RIGHTS (the
accept queues are the same kernel sockets: no connection attempt is lost), and the old process
drains its established connections and exits by itself. Unlike ``agent restart`` nothing is
signalled: the old process is reaped, never killed.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from hybridmesh.cli._output import OutputFormat, OutputOption, console, fail, print_json
from hybridmesh.lab.client import DaemonUnavailable, LabClient

__all__ = ["register"]

node_app = typer.Typer(help="The per-node proxies (placement node).", no_args_is_help=True)


def _call(method: str, path: str, timeout: float) -> Any:
    try:
        result = LabClient(timeout=timeout).call(method, path)
    except DaemonUnavailable as exc:
        fail(str(exc), "is a lab running? `hybridmesh lab status`")
    if result.status != 200:
        message = result.body.get("error") if isinstance(result.body, dict) else result.body
        fail(str(message or result.body).strip(),
             "`hybridmesh node status` lists the node proxies")
    return result.body


@node_app.command("status")
def status(output: OutputFormat = OutputOption) -> None:
    """One row per node proxy: pid, readiness, restarts, upgrades, draining predecessors."""
    body = _call("GET", "/v1/lab/nodes", 10)
    rows = body.get("nodeProxies") or []
    if output is OutputFormat.json:
        print_json(body)
        return
    if not rows:
        console.print("no node proxies (no pod has placement: node)")
        return
    table = Table("NODE", "PHASE", "READY", "PID", "RESTARTS", "UPGRADES", "DRAINING")
    for row in rows:
        table.add_row(row["node"], row["phase"], "yes" if row["ready"] else "no",
                      str(row["pid"] or "-"), str(row["restarts"]), str(row["upgrades"]),
                      " ".join(str(p) for p in row["draining"]) or "-")
    console.print(table)


@node_app.command("upgrade")
def upgrade(
    node: str = typer.Argument(..., help="the node whose proxy to replace"),
    output: OutputFormat = OutputOption,
) -> None:
    """Replace NODE's proxy without dropping a connection: the new process takes the listening
    sockets over, the old one finishes what it carries, then exits."""
    body = _call("POST", f"/v1/lab/nodes/{node}/upgrade", 60)
    if output is OutputFormat.json:
        print_json(body)
        return
    console.print(f"node proxy of {node} upgraded: pid {body['oldPid']} → {body['newPid']} "
                  f"(pid {body['oldPid']} drains its open connections, then exits)",
                  highlight=False)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
