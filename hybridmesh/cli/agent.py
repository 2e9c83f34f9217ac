"""`hybridmesh agent restart NODE`: replace a node agent's process (restart or upgrade).

The lab daemon supervises the agents, so it does the replacing: SIGTERM (the agent closes its
handles, every pin stays), then the new process takes the pinned maps over and swaps its
programs into the pinned links atomically. Established connections never notice.
"""

from __future__ import annotations

import typer

from hybridmesh.cli._output import OutputFormat, OutputOption, console, fail, print_json
from hybridmesh.lab.client import DaemonUnavailable, LabClient

__all__ = ["register"]

agent_app = typer.Typer(help="The per-node agents (eBPF datapaths).", no_args_is_help=True)


@agent_app.command("restart")
def restart(
    node: str = typer.Argument(..., help="the node whose agent to replace"),
    output: OutputFormat = OutputOption,
) -> None:
    """Replace NODE's agent with a fresh process; established connections are not touched."""
    try:
        result = LabClient(timeout=60).call("POST", f"/v1/lab/agents/{node}/restart")
    except DaemonUnavailable as exc:
        fail(str(exc), "is a lab running? `hybridmesh lab status`")
    if result.status != 200:
        fail(str(result.body).strip(), "`hybridmesh lab status` lists the nodes")
    body = result.body
    if output is OutputFormat.json:
        print_json(body)
        return
    if not body.get("ready"):
        fail(f"agent of {node} was replaced (pid {body.get('pid')}) but is not ready",
             f"see `hybridmesh lab status` and the log STATE_DIR/logs/agent-{node}.log")
    console.print(f"agent of node {node} restarted: pid {body['oldPid']} → {body['pid']}",
                  highlight=False)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(agent_app, name="agent")
