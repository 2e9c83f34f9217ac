"""`hybridmesh observe`: the flows the node agents saw, Hubble-style, one line each.

Reads every agent of the running lab (``STATE_DIR/agents/*.sock``, see
:mod:`hybridmesh.cli._observe_client`); filters are parsed once into a pure predicate
(:mod:`hybridmesh.cli._observe_filter`) and applied here, so any agent serves any filter.
``--last N`` merges the nodes in time order; ``-f`` then follows every node until Ctrl-C.
``-o json`` prints each event as the agent's own JSON record, one a line (NDJSON).
"""

from __future__ import annotations

import queue
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.markup import escape

from hybridmesh import env
from hybridmesh.agent.datapath import FlowEvent
from hybridmesh.cli._observe_client import AgentError, AgentFlows, Batch, Follower, merge_last
from hybridmesh.cli._observe_filter import FilterError, FlowFilter, build_filter
from hybridmesh.cli._observe_format import format_json, format_line
from hybridmesh.cli._output import OutputFormat, OutputOption, err_console, fail

__all__ = ["DEFAULT_LAST", "FILTER_WINDOW", "agents_dir", "register"]

DEFAULT_LAST = 20
FILTER_WINDOW = 10_000
"""With filters, this many of each agent's newest events are fetched and filtered here (the
agent's API has no filters), then the newest ``--last`` kept."""

_NO_AGENT_HINT = (
    "start a lab with `hybridmesh lab up`: every node runs an agent, and pods with placement "
    "kernel or sidecar+ebpf (and sidecar, node) get flows"
)


def agents_dir() -> Path:
    return env.STATE_DIR / "agents"


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _printer(output: OutputFormat) -> Callable[[FlowEvent], None]:
    render = format_json if output == OutputFormat.json else format_line

    def emit(event: FlowEvent) -> None:
        sys.stdout.write(render(event) + "\n")
        sys.stdout.flush()

    return emit


def _initial(source: AgentFlows, nodes: list[str], window: int) -> list[Batch]:
    batches = []
    for node in nodes:
        try:
            batches.append(source.last(node, window))
        except AgentError as exc:
            _warn(str(exc))
    if not batches:
        fail("no node agent answered", _NO_AGENT_HINT)
    _report_bad(batches)
    return batches


def _report_bad(batches: list[Batch]) -> None:
    for batch in batches:
        if batch.bad:
            _warn(f"agent of node {batch.node}: skipped {batch.bad} lines that were not flows")


def _follow(follower: Follower, keep: FlowFilter, emit: Callable[[FlowEvent], None]) -> None:
    """Print what the follower threads deliver until every agent is gone (or Ctrl-C)."""
    while True:
        try:
            item = follower.queue.get(timeout=0.5)
        except queue.Empty:
            if not follower.alive() and follower.queue.empty():
                fail("every node agent went away", "is the lab still up? `hybridmesh lab status`")
            continue
        if isinstance(item, AgentError):
            _warn(f"{item} (no longer followed)")
            continue
        _report_bad([item])
        for event in item.events:
            if keep(event):
                emit(event)


def observe(
    *,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new flows."),
    last: int | None = typer.Option(
        None,
        "--last",
        min=0,
        help=f"Show the newest N flows first (default {DEFAULT_LAST}; 0 with -f).",
    ),
    pod: str | None = typer.Option(None, "--pod", help="Either end is [NS/]POD (or an IP)."),
    from_pod: str | None = typer.Option(None, "--from-pod", help="The source is [NS/]POD."),
    to_pod: str | None = typer.Option(None, "--to-pod", help="The destination is [NS/]POD."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Either end in NS."),
    port: int | None = typer.Option(None, "--port", help="Either end's port is N."),
    verdict: str | None = typer.Option(None, "--verdict", help="FORWARDED or DROPPED."),
    output: OutputFormat = OutputOption,
) -> None:
    """Show TCP flows seen by the node agents' eBPF programs (Hubble's `observe`)."""
    try:
        keep = build_filter(
            pod=pod,
            from_pod=from_pod,
            to_pod=to_pod,
            namespace=namespace,
            port=port,
            verdict=verdict,
        )
    except FilterError as exc:
        fail(
            escape(str(exc)), escape("pods are [namespace/]name; --verdict is FORWARDED or DROPPED")
        )
    count = last if last is not None else (0 if follow else DEFAULT_LAST)
    source = AgentFlows(agents_dir())
    nodes = source.nodes()
    if not nodes:
        fail(f"no node agent is running (no sockets in {source.directory})", _NO_AGENT_HINT)
    batches = _initial(source, nodes, count if keep.empty else max(count, FILTER_WINDOW))
    emit = _printer(output)
    for event in merge_last(batches, count, keep):
        emit(event)
    if not follow:
        return
    follower = Follower(source)
    follower.start({b.node: b.seq for b in batches})
    try:
        _follow(follower, keep, emit)
    except KeyboardInterrupt:
        follower.stop()


def register(app: typer.Typer) -> None:
    app.command("observe")(observe)
