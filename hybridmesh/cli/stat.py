"""`hybridmesh stat [RESOURCE]`: golden signals per workload, read from the proxies (Linkerd's
`viz stat`).

Every ready pod with a proxy of its own is scraped twice, ``--window`` seconds apart, at
``<pod ip>:15020/metrics`` (through a socket made inside the pod's node), and so is the node
proxy of every node hosting ``node`` pods (``127.0.0.1:15020`` in the node netns; it reports
per source/destination workload, in connections: RPS reads "cps"); the difference is the
window's traffic. A view reads one reporter (``stat_rows.edge_reporter``: ``--from`` the
callers' end, ``--to`` the callee's own proxies when it has any) and scrapes only the proxies
that report that end. The figures are computed by ``hybridmesh.telemetry``; this module only parses
the command line, gathers the two scrapes and prints. Where pods and scrapes come from is a
``StatSources`` so tests (and later a dashboard) can feed their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
from hybridmesh.telemetry.fetch import FetchError, fetch_metrics
from hybridmesh.telemetry.scrape import (
    UNIT_CONNECTIONS,
    Samples,
    ScrapeError,
    delta,
    merge,
    parse,
)
from hybridmesh.telemetry.stat_rows import (
    NODE_PROXY_NAMESPACE,
    StatRow,
    View,
    build_rows,
    edge_reporter,
    node_proxy_targets,
    scrape_targets,
)

__all__ = ["StatSources", "lab_sources", "register"]

Pod = Mapping[str, Any]
PodKey = tuple[str, str]  # (namespace, pod name)

_WORKLOAD_TYPES = frozenset({"deploy", "deployment", "deployments", "workload", "workloads", "wl"})
_PARALLEL_SCRAPES = 8


class NoLab(Exception):
    """No lab answers; raised by ``StatSources.pods``."""


@dataclass
class StatSources:
    """Where ``stat`` gets pods and proxy metrics; the lab by default, fakes in tests."""

    pods: Callable[[], list[dict[str, Any]]]  # raises NoLab
    scrape: Callable[[Pod], str]  # raises FetchError
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


def lab_sources(timeout: float = 2.0) -> StatSources:
    """Pods from the running lab's API, metrics over sockets made in each pod's node netns."""

    def pods() -> list[dict[str, Any]]:
        from hybridmesh.lab.client import DaemonUnavailable, LabClient

        try:
            found: list[dict[str, Any]] = LabClient().status()["pods"]
        except DaemonUnavailable as exc:
            raise NoLab(str(exc)) from exc
        return found

    def scrape(pod: Pod) -> str:
        return fetch_metrics(pod["node"], pod["ip"], timeout=timeout)

    return StatSources(pods=pods, scrape=scrape)


@dataclass
class _Round:
    """One scrape of every target: samples per pod, errors per pod, when (midpoint)."""

    samples: dict[PodKey, Samples] = field(default_factory=dict)
    errors: dict[PodKey, str] = field(default_factory=dict)
    at: float = 0.0


def _scrape_one(sources: StatSources, pod: Pod) -> Samples | str:
    try:
        return parse(sources.scrape(pod))
    except (FetchError, ScrapeError) as exc:
        return str(exc)


def _scrape_round(sources: StatSources, targets: Sequence[Pod]) -> _Round:
    started = sources.clock()
    with ThreadPoolExecutor(max_workers=max(1, min(_PARALLEL_SCRAPES, len(targets)))) as pool:
        results = list(pool.map(lambda pod: _scrape_one(sources, pod), targets))
    out = _Round(at=(started + sources.clock()) / 2)
    for pod, result in zip(targets, results, strict=True):
        key = (pod["namespace"], pod["name"])
        if isinstance(result, str):
            out.errors[key] = result
        else:
            out.samples[key] = result
    return out


def _parse_resource(text: str | None, what: str) -> str | None:
    """``deploy/NAME``, ``workload/NAME`` or ``NAME`` → NAME; ``deploy`` (all) or None → None."""
    if text is None:
        return None
    kind, slash, name = text.partition("/")
    if not slash:
        return None if text in _WORKLOAD_TYPES else text
    if kind not in _WORKLOAD_TYPES or not name or "/" in name:
        fail(
            f"{what} {text!r} is not a workload reference",
            "write deploy/NAME (or workload/NAME, or just NAME); namespaces go in -n/--namespace",
            code=2,
        )
    return name


def _check_exists(pods: Sequence[Pod], name: str | None, namespace: str | None) -> None:
    if name is None:
        return
    known = sorted({f"{p['namespace']}/{p['workload']}" for p in pods})
    if any(p["workload"] == name and namespace in (None, p["namespace"]) for p in pods):
        return
    where = f" in namespace {namespace}" if namespace else ""
    fail(f"no workload {name}{where} in the lab", f"workloads: {', '.join(known) or 'none'}")


def _targets(pods: Sequence[Pod], view: View) -> list[Pod]:
    """Only the proxies that can report on the view: the edge's reporting end's own (a
    ``node`` pod's: its node's node proxy) — the caller's for ``--from``, the callee's for
    ``--to`` when it has a proxy; every proxy otherwise."""
    targets = scrape_targets(pods) + node_proxy_targets(pods)
    if view.kind == "workload" or (view.kind == "to" and edge_reporter(pods, view) == "source"):
        return targets
    workload, namespace = ((view.from_workload, view.from_namespace) if view.kind == "from"
                           else (view.to_workload, view.to_namespace))
    ends = [p for p in pods if p["workload"] == workload and namespace in (None, p["namespace"])]
    keys = {(p["namespace"], p["name"]) for p in ends}
    keys |= {(NODE_PROXY_NAMESPACE, p.get("node")) for p in ends if p.get("placement") == "node"}
    return [p for p in targets if (p["namespace"], p["name"]) in keys]


def _collect(
    sources: StatSources, pods: Sequence[Pod], view: View, window: float
) -> tuple[list[StatRow], float, dict[PodKey, str]]:
    """Two rounds of scrapes ``window`` s apart → rows, the real window, scrape errors."""
    targets = _targets(pods, view)
    first = _scrape_round(sources, targets)
    if targets:
        sources.sleep(window)
    second = _scrape_round(sources, targets)
    elapsed = max(second.at - first.at, 1e-9) if targets else window
    both = first.samples.keys() & second.samples.keys()
    windowed = merge(delta(first.samples[k], second.samples[k]) for k in sorted(both))
    current = merge(second.samples[k] for k in sorted(both))
    rows = build_rows(pods, windowed, current, elapsed, scraped=both, view=view)
    return rows, elapsed, {**first.errors, **second.errors}


# -- output ------------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}ms"
    return f"{value:.1f}ms" if value < 100 else f"{value:.0f}ms"


def _cells(row: StatRow) -> list[str]:
    s = row.stats
    rate = s.success_rate if s else None
    return [
        row.namespace,
        row.name,
        f"{row.meshed}/{row.pods}",
        "-" if rate is None else f"{100 * rate:.2f}%",
        "-" if s is None else f"{s.rps:.1f}{'cps' if s.unit == UNIT_CONNECTIONS else 'rps'}",
        _ms(s.p50_ms if s else None),
        _ms(s.p95_ms if s else None),
        _ms(s.p99_ms if s else None),
        "-" if row.tcp_connections is None else str(row.tcp_connections),
    ]


def _title(view: View, reporter: str, elapsed: float) -> str:
    if view.kind == "from":
        edge = f"traffic from {_ref(view.from_namespace, view.from_workload)}, callers' proxies"
    elif view.kind == "to":
        whose = "callers'" if reporter == "source" else "its own"
        edge = f"traffic to {_ref(view.to_namespace, view.to_workload)}, {whose} proxies"
    else:
        edge = "inbound traffic, workloads' own proxies"
    return f"{edge}, over {elapsed:.1f}s"


def _ref(namespace: str | None, name: str | None) -> str:
    return f"{namespace}/{name}" if namespace else str(name)


def _print_table(rows: list[StatRow], view: View, reporter: str, elapsed: float) -> None:
    columns = ["NAMESPACE", "NAME", "MESHED", "SUCCESS", "RPS"]
    columns += ["LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN"]
    table = Table(*columns, box=None, pad_edge=False, header_style="bold", title_justify="left")
    table.title = _title(view, reporter, elapsed)
    for row in rows:
        table.add_row(*_cells(row))
    console.print(table, highlight=False)
    if not rows:
        empty = "no workloads" if view.kind == "workload" else "no traffic on that edge"
        console.print(f"{empty} in the window", highlight=False)
    if any(r.stats is not None and r.stats.unit == UNIT_CONNECTIONS for r in rows):
        console.print("cps: connections/s through node proxies (L4): success = connections "
                      "carried, latency = time to a ready upstream", highlight=False)


def _print_errors(errors: Mapping[PodKey, str]) -> None:
    for (namespace, name), message in sorted(errors.items()):
        err_console.print(
            f"[yellow]warning:[/] {namespace}/{name}: {message}", highlight=False, soft_wrap=True
        )


def _to_json(
    rows: list[StatRow], view: View, reporter: str, elapsed: float,
    errors: Mapping[PodKey, str],
) -> dict[str, Any]:
    return {
        "view": view.kind,
        "reporter": reporter,  # whose series the rows are: "source" or "destination"
        "from": _ref(view.from_namespace, view.from_workload) if view.from_workload else None,
        "to": _ref(view.to_namespace, view.to_workload) if view.to_workload else None,
        "windowSeconds": round(elapsed, 3),
        "rows": [row.to_json() for row in rows],
        "scrapeErrors": [
            {"pod": f"{ns}/{name}", "error": message}
            for (ns, name), message in sorted(errors.items())
        ],
    }


# -- command -----------------------------------------------------------------------------
def register(app: typer.Typer, *, sources: Callable[[], StatSources] = lab_sources) -> None:
    """Add ``stat`` to ``app``; ``sources`` builds where pods and metrics come from."""

    def stat(
        resource: str | None = typer.Argument(
            None, help="deploy (all, the default), deploy/NAME, workload/NAME or NAME."
        ),
        *,
        window: float = typer.Option(
            5.0, "--window", "-w", min=0.1, help="Seconds between the two scrapes."
        ),
        namespace: str | None = typer.Option(None, "--namespace", "-n", help="Only this one."),
        from_: str | None = typer.Option(
            None, "--from", help="Show the workloads this one calls (deploy/NAME)."
        ),
        from_namespace: str | None = typer.Option(None, help="Namespace of --from."),
        to: str | None = typer.Option(
            None, "--to", help="Show the workloads calling this one (deploy/NAME)."
        ),
        to_namespace: str | None = typer.Option(None, help="Namespace of --to."),
        output: OutputFormat = OutputOption,
    ) -> None:
        """Success rate, RPS, latency percentiles and open connections per workload."""
        if from_ and to:
            fail("--from and --to cannot be combined", "ask for one edge direction at a time", 2)
        view = View(
            namespace=namespace,
            name=_parse_resource(resource, "resource"),
            from_workload=_parse_resource(from_, "--from"),
            from_namespace=from_namespace,
            to_workload=_parse_resource(to, "--to"),
            to_namespace=to_namespace,
        )
        if (from_ and view.from_workload is None) or (to and view.to_workload is None):
            fail("--from/--to need a workload name", "write --from deploy/NAME", code=2)
        _run(sources(), view, window, output)

    app.command("stat")(stat)


def _run(sources: StatSources, view: View, window: float, output: OutputFormat) -> None:
    try:
        pods = sources.pods()
    except NoLab as exc:
        fail(f"no lab is running ({exc})", "start one with `hybridmesh lab up FILE`")
    _check_exists(pods, view.name, view.namespace)
    _check_exists(pods, view.from_workload, view.from_namespace)
    _check_exists(pods, view.to_workload, view.to_namespace)
    rows, elapsed, errors = _collect(sources, pods, view, window)
    reporter = edge_reporter(pods, view)
    if output is OutputFormat.json:
        print_json(_to_json(rows, view, reporter, elapsed, errors))
    else:
        _print_table(rows, view, reporter, elapsed)
        _print_errors(errors)
    targets = _targets(pods, view)
    if targets and not _answered_any(errors, targets):
        fail(
            "no proxy answered on :15020/metrics",
            "check the proxies run: `hybridmesh lab status`, `hybridmesh lab logs POD`",
        )


def _answered_any(errors: Mapping[PodKey, str], targets: Sequence[Pod]) -> bool:
    return any((p["namespace"], p["name"]) not in errors for p in targets)
