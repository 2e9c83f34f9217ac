"""`hybridmesh lab ...`: bring a topology up on this machine, change it, inspect it, remove it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

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

lab_app = typer.Typer(
    help="Run a topology on this machine: nodes and pods from netns, veth and cgroups.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")


# -- up ----------------------------------------------------------------------------------
@lab_app.command("up")
def up(
    file: Path | None = typer.Argument(None, help="Topology YAML; default: the embedded demo."),
    timeout: float = typer.Option(120.0, help="Seconds to wait for every pod to become ready."),
    output: OutputFormat = OutputOption,
) -> None:
    """Create the lab; return once every pod is ready (it keeps running until `lab down`)."""
    from hybridmesh.lab import runner

    started = time.monotonic()
    try:
        status = runner.lab_up(file, timeout=timeout, progress=_progress(output))
    except runner.LabUpError as exc:
        fail(exc.message, exc.hint)
    elapsed = time.monotonic() - started
    if output is OutputFormat.json:
        print_json({**status, "upSeconds": round(elapsed, 3)})
        return
    _print_status(status)
    console.print(f"[green]lab up[/] in {elapsed:.2f}s — `hybridmesh lab down` removes it")


def _progress(output: OutputFormat) -> Any:
    if output is OutputFormat.json or not sys.stderr.isatty():
        return None
    status = err_console.status("creating lab…")
    status.start()

    def report(msg: str | None) -> None:
        if msg is None:
            status.stop()
        else:
            status.update(msg)

    return report


# -- apply -------------------------------------------------------------------------------
@lab_app.command("apply")
def apply(
    file: Path = typer.Argument(..., help="YAML with resources to create or replace."),
    output: OutputFormat = OutputOption,
) -> None:
    """Change the running lab without tearing it down (scale a workload, add a service, ...)."""
    from hybridmesh.lab import runner

    try:
        result = runner.lab_apply(file)
    except runner.LabUpError as exc:
        fail(exc.message, exc.hint)
    if output is OutputFormat.json:
        print_json(result)
        return
    for key, label in (
        ("podsAdded", "pod created"),
        ("podsRemoved", "pod removed"),
        ("nodesAdded", "node created"),
        ("nodesRemoved", "node removed"),
    ):
        for item in result.get(key, []):
            console.print(f"  {label}: {item}")
    if result.get("servicesChanged"):
        console.print("  services updated")
    console.print(f"applied {file} (control plane version {result['version']})")


# -- status ------------------------------------------------------------------------------
@lab_app.command("status")
def status(output: OutputFormat = OutputOption) -> None:
    """Nodes, pods (phase, readiness, restarts, CPU, memory) and services of the running lab."""
    st = _client_status()
    if output is OutputFormat.json:
        print_json(st)
    else:
        _print_status(st)


def _client_status() -> dict[str, Any]:
    from hybridmesh.lab.client import DaemonUnavailable, LabClient

    try:
        return LabClient().status()
    except DaemonUnavailable:
        fail("no lab is running", "start one with `hybridmesh lab up [FILE]`")


def _print_status(st: dict[str, Any]) -> None:
    console.print(
        f"lab [bold]{st['phase']}[/]" + (f": {st['message']}" if st.get("message") else "")
    )
    pods = Table(
        "POD",
        "NODE",
        "IP",
        "PLACEMENT",
        "PHASE",
        "READY",
        "RESTARTS",
        "CPU",
        "MEMORY",
        title="pods",
        title_justify="left",
    )
    for p in st["pods"]:
        usage = p.get("usage") or {}
        cpu = f"{usage['cpuUsec'] / 1e6:.2f}s" if usage.get("cpuUsec") is not None else "-"
        mem = (
            f"{usage['memoryBytes'] / 2**20:.1f}Mi" if usage.get("memoryBytes") is not None else "-"
        )
        pods.add_row(
            f"{p['namespace']}/{p['name']}",
            p["node"],
            p["ip"],
            p["placement"],
            p["phase"],
            "yes" if p["ready"] else "no",
            str(p["restarts"]),
            cpu,
            mem,
        )
    console.print(pods)
    svcs = Table(
        "SERVICE", "CLUSTER-IP", "PORTS", "ENDPOINTS", title="services", title_justify="left"
    )
    for s in st["services"]:
        ports = ",".join(f"{p['port']}->{p['targetPort']}" for p in s["ports"])
        eps = ",".join(e["ip"] for e in s["endpoints"]) or "<none>"
        svcs.add_row(f"{s['namespace']}/{s['name']}", s["clusterIP"], ports, eps)
    console.print(svcs)


# -- exec, logs ---------------------------------------------------------------------------
@lab_app.command(
    "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def exec_(ctx: typer.Context, pod: str = typer.Argument(..., help="[namespace/]pod")) -> None:
    """Run a command in a pod's network namespace and cgroup: `lab exec POD -- CMD ARGS...`."""
    from hybridmesh.lab import runner

    argv = [a for a in ctx.args if a != "--"] if ctx.args[:1] == ["--"] else list(ctx.args)
    if not argv:
        fail("no command given", "usage: hybridmesh lab exec POD -- CMD [ARGS...]", code=2)
    try:
        code = runner.lab_exec(pod, argv)
    except runner.LabUpError as exc:
        fail(exc.message, exc.hint)
    raise typer.Exit(code)


@lab_app.command("logs")
def logs(
    pod: str = typer.Argument(..., help="[namespace/]pod"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int = typer.Option(-1, help="Only the last N lines (-1: all)."),
) -> None:
    """Print a pod's stdout/stderr (kept across restarts, like `kubectl logs`)."""
    from hybridmesh.lab import runner

    try:
        path = runner.log_path_of(pod)
    except runner.LabUpError as exc:
        fail(exc.message, exc.hint)
    runner.print_log(path, follow=follow, tail=tail)


# -- down --------------------------------------------------------------------------------
@lab_app.command("down")
def down(output: OutputFormat = OutputOption) -> None:
    """Stop every pod and remove everything the lab made (idempotent; works after a crash)."""
    from hybridmesh.lab import runner

    started = time.monotonic()
    report = runner.lab_down()
    elapsed = time.monotonic() - started
    if output is OutputFormat.json:
        print_json({**report, "downSeconds": round(elapsed, 3)})
        return
    removed = ", ".join(f"{v} {k}" for k, v in report.items() if isinstance(v, int) and v)
    console.print(
        f"lab down in {elapsed:.2f}s"
        + (f" (removed {removed})" if removed else " (nothing to remove)")
    )
