"""`hybridmesh authz check`: which AuthorizationPolicy decides a request, without sending it.

The source pod, the Service and its endpoint pods come from the running lab's status; the
policies and the trust domain from the control plane's snapshot. Each endpoint is evaluated by
the same engine the proxies use (``hybridmesh.policy``), with the attributes the destination
would see: the source's SPIFFE ID if the source has a proxy (plaintext otherwise), the target
port, and for HTTP the normalized path (an unacceptable path is reported as the 400 the proxy
answers). Where pods and snapshots come from is an ``AuthzSources`` so tests feed their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import typer
from rich.table import Table

from hybridmesh.cli._output import OutputFormat, OutputOption, console, fail, print_json
from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId
from hybridmesh.policy import (
    BadRequest,
    PolicyError,
    RequestAttributes,
    Target,
    compile_policies,
    load_policies,
)
from hybridmesh.resources import AuthorizationPolicy

__all__ = ["AuthzSources", "CheckError", "NoLab", "lab_sources", "register", "run_check"]

Json = dict[str, Any]

_HTTP_PROTOCOLS = frozenset({"http", "http2", "grpc"})
_PROXIED = frozenset({"sidecar", "sidecar+ebpf", "node"})
_ENFORCEMENT = {"sidecar": "l7", "sidecar+ebpf": "l7", "node": "l7", "kernel": "l4"}


class NoLab(Exception):
    """No lab answers (raised by ``AuthzSources``)."""


class CheckError(Exception):
    """The question cannot be answered as asked; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass
class AuthzSources:
    status: Callable[[], Json]  # lab status: pods, services; raises NoLab
    snapshot: Callable[[str, str], Json]  # (namespace, pod) -> pod snapshot; raises NoLab


def lab_sources() -> AuthzSources:
    from hybridmesh.lab.client import DaemonUnavailable, LabClient

    def status() -> Json:
        try:
            return LabClient().status()
        except DaemonUnavailable as exc:
            raise NoLab(str(exc)) from exc

    def snapshot(namespace: str, pod: str) -> Json:
        try:
            result = LabClient().call("GET", f"/v1/snapshots/pods/{namespace}/{pod}")
        except DaemonUnavailable as exc:
            raise NoLab(str(exc)) from exc
        if result.status != 200 or not isinstance(result.body, dict):
            raise NoLab(f"snapshot of {namespace}/{pod}: HTTP {result.status} {result.body}")
        return result.body

    return AuthzSources(status=status, snapshot=snapshot)


@dataclass(frozen=True)
class Query:
    source: str
    service: str
    port: str | None = None
    method: str | None = None
    path: str | None = None
    host: str | None = None

    @property
    def wants_http(self) -> bool:
        return any(v is not None for v in (self.method, self.path, self.host))


# -- resolution ------------------------------------------------------------------------------


def _find_pod(pods: list[Json], text: str) -> Json:
    namespace, slash, name = text.rpartition("/")
    found = [p for p in pods if p["name"] == name and (not slash or p["namespace"] == namespace)]
    if len(found) == 1:
        return found[0]
    if found:
        spaces = ", ".join(sorted(p["namespace"] for p in found))
        raise CheckError(f"pod {name!r} exists in several namespaces ({spaces})", "write NS/POD")
    known = ", ".join(sorted(f"{p['namespace']}/{p['name']}" for p in pods)) or "none"
    raise CheckError(f"no pod {text!r} in the lab", f"pods: {known}")


def _find_service(services: list[Json], text: str, default_namespace: str) -> Json:
    if "/" in text:
        namespace, _, name = text.partition("/")
    else:
        name, _, rest = text.partition(".")
        namespace = rest.split(".")[0] if rest else default_namespace
    for svc in services:
        if svc["name"] == name and svc["namespace"] == namespace:
            return svc
    known = ", ".join(sorted(f"{s['namespace']}/{s['name']}" for s in services)) or "none"
    raise CheckError(f"no Service {namespace}/{name} in the lab", f"services: {known}")


def _find_port(svc: Json, wanted: str | None) -> Json:
    ports: list[Json] = svc["ports"]
    shown = ", ".join(f"{p['port']} ({p['name']})" for p in ports) or "none"
    if wanted is None:
        if len(ports) == 1:
            return ports[0]
        raise CheckError(f"Service {svc['name']} has ports {shown}", "choose one with --port")
    for port in ports:
        if wanted in (str(port["port"]), port["name"]):
            return port
    raise CheckError(f"Service {svc['name']} has no port {wanted!r}; it has {shown}")


def _selects(svc: Json, pod: Json) -> bool:
    selector: Mapping[str, str] = svc.get("selector") or {}
    labels: Mapping[str, str] = pod.get("labels") or {}
    return (
        bool(selector)
        and pod["namespace"] == svc["namespace"]
        and all(labels.get(k) == v for k, v in selector.items())
    )


def _principal(pod: Json, trust_domain: str) -> SpiffeId | None:
    """The identity the destination sees: the SVID of the source's proxy, if it has one."""
    if pod.get("placement") not in _PROXIED:
        return None
    try:
        return SpiffeId.for_workload(trust_domain, pod["namespace"], pod["serviceAccount"])
    except InvalidSpiffeId as exc:
        raise CheckError(f"source identity: {exc}") from None


# -- the check --------------------------------------------------------------------------------


def run_check(sources: AuthzSources, query: Query) -> Json:
    """Evaluate the query for every endpoint pod; the JSON ``-o json`` prints."""
    status = sources.status()
    pods: list[Json] = status.get("pods", [])
    services: list[Json] = status.get("services", [])
    source = _find_pod(pods, query.source)
    svc = _find_service(services, query.service, source["namespace"])
    port = _find_port(svc, query.port)
    endpoints = [p for p in pods if _selects(svc, p)]
    if not endpoints:
        raise CheckError(f"Service {svc['namespace']}/{svc['name']} selects no pod")
    snapshot = sources.snapshot(source["namespace"], source["name"])
    mesh = snapshot.get("mesh", {})
    trust_domain = str(mesh.get("trustDomain", "cluster.local"))
    try:
        policies = load_policies(snapshot.get("policies", []))
    except PolicyError as exc:
        raise CheckError(str(exc)) from None
    principal = _principal(source, trust_domain)
    request, rejected = _request(query, svc, port, principal)
    context = _Context(svc, services, policies, trust_domain, request, rejected)
    results = [_evaluate(pod, context) for pod in endpoints]
    return {
        "from": {
            "pod": f"{source['namespace']}/{source['name']}",
            "placement": source.get("placement"),
            "principal": None if principal is None else str(principal),
        },
        "to": {
            "service": f"{svc['namespace']}/{svc['name']}",
            "port": port["port"],
            "targetPort": port["targetPort"],
            "appProtocol": port.get("appProtocol"),
        },
        "mtlsMode": mesh.get("mtlsMode"),
        "request": _request_json(request, rejected),
        "endpoints": results,
    }


def _request(
    query: Query, svc: Json, port: Json, principal: SpiffeId | None
) -> tuple[RequestAttributes, str | None]:
    """The attributes to decide on, or the 400 reason if the proxy would refuse the request."""
    protocol = port.get("appProtocol")
    target_port = int(port["targetPort"])
    if protocol in ("tcp", "opaque") and query.wants_http:
        raise CheckError(
            f"port {port['port']} is appProtocol {protocol}: no method, path or host is seen",
            "drop --method/--path/--host to check the TCP connection",
        )
    if protocol not in _HTTP_PROTOCOLS and not query.wants_http:
        return RequestAttributes.tcp(principal, target_port), None
    host = query.host or f"{svc['name']}.{svc['namespace']}.svc.cluster.local"
    try:
        request = RequestAttributes.http(
            principal, target_port, query.method or "GET", query.path or "/", host
        )
    except BadRequest as exc:
        return RequestAttributes.tcp(principal, target_port), f"400 bad request: {exc}"
    return request, None


def _request_json(request: RequestAttributes, rejected: str | None) -> Json | None:
    if rejected is not None:
        return {"rejected": rejected}
    if request.path is None:
        return None
    return {"method": request.method, "path": request.path.target, "host": request.host}


@dataclass(frozen=True)
class _Context:
    """What is the same for every endpoint of one check."""

    svc: Json
    services: list[Json]
    policies: tuple[AuthorizationPolicy, ...]
    trust_domain: str
    request: RequestAttributes
    rejected: str | None  # the 400 the destination proxy answers, if any


def _evaluate(pod: Json, context: _Context) -> Json:
    """One endpoint's decision, as enforced by its placement."""
    svc, request, rejected = context.svc, context.request, context.rejected
    placement = pod.get("placement", "none")
    enforcement = _ENFORCEMENT.get(placement, "none")
    row = {
        "pod": f"{pod['namespace']}/{pod['name']}",
        "node": pod.get("node"),
        "ready": pod.get("ready"),
        "placement": placement,
        "enforcement": enforcement,
    }
    if rejected is not None and enforcement == "l7":
        return {**row, "allowed": False, "decision": None, "reason": rejected}
    if enforcement == "l4" and request.is_http:
        request = RequestAttributes.tcp(request.principal, request.port)
    target = Target(
        namespace=pod["namespace"],
        labels=pod.get("labels") or {},
        services=frozenset(
            f"{s['namespace']}/{s['name']}" for s in context.services if _selects(s, pod)
        ),
        via=f"{svc['namespace']}/{svc['name']}",
    )
    try:
        evaluator = compile_policies(context.policies, target, trust_domain=context.trust_domain)
    except PolicyError as exc:
        raise CheckError(str(exc)) from None
    decision = evaluator.decide(request)
    reason = decision.reason
    if enforcement == "none":
        reason = f"not enforced (placement {placement}: no proxy); policies say: {reason}"
    elif enforcement == "l4":
        reason = f"L4 only (placement kernel): {reason}"
    allowed = decision.allowed or enforcement == "none"
    return {**row, "allowed": allowed, "decision": decision.to_json(), "reason": reason}


# -- output --------------------------------------------------------------------------------------


def _print_table(result: Json) -> None:
    source, dest, request = result["from"], result["to"], result["request"]
    who = source["principal"] or "plaintext (no proxy: no identity)"
    console.print(f"[bold]from[/] {source['pod']} as {who}", highlight=False)
    what = f"{dest['service']}:{dest['port']} → targetPort {dest['targetPort']}"
    if request is None:
        what += " (TCP)"
    elif "rejected" in request:
        what += f" — {request['rejected']}"
    else:
        what += f" {request['method']} {request['path']} (host {request['host']})"
    console.print(f"[bold]to[/] {what}", highlight=False)
    table = Table("POD", "READY", "PLACEMENT", "DECISION", "POLICY", "REASON", box=None)
    for row in result["endpoints"]:
        decision = row["decision"] or {}
        verdict = "[green]ALLOW[/]" if row["allowed"] else "[red]DENY[/]"
        if row["decision"] is None:
            verdict = "[red]400[/]"
        policy = decision.get("policy") or "-"
        ready = "yes" if row["ready"] else "no"
        table.add_row(row["pod"], ready, row["placement"], verdict, policy, row["reason"])
    console.print(table)


def register(app: typer.Typer, *, sources: Callable[[], AuthzSources] = lab_sources) -> None:
    """Add ``authz check`` to ``app``; ``sources`` builds where status and snapshots come from."""
    authz_app = typer.Typer(help="AuthorizationPolicy tools.", no_args_is_help=True)

    @authz_app.command("check")
    def check(
        *,
        from_: str = typer.Option(..., "--from", help="Source pod: [NAMESPACE/]POD."),
        to: str = typer.Option(..., "--to", help="Service: [NAMESPACE/]NAME or NAME.NAMESPACE."),
        port: str | None = typer.Option(None, "--port", help="Service port (number or name)."),
        method: str | None = typer.Option(None, "--method", help="HTTP method (default GET)."),
        path: str | None = typer.Option(None, "--path", help="HTTP request path (default /)."),
        host: str | None = typer.Option(None, "--host", help="Host header (default the FQDN)."),
        output: OutputFormat = OutputOption,
    ) -> None:
        """Which policy allows or denies a request to each pod of a Service, and why."""
        query = Query(from_, to, port, method, path, host)
        try:
            result = run_check(sources(), query)
        except NoLab as exc:
            fail(f"no lab is running ({exc})", "start one with `hybridmesh lab up FILE`")
        except CheckError as exc:
            fail(exc.message, exc.hint, code=2)
        if output is OutputFormat.json:
            print_json(result)
        else:
            _print_table(result)

    app.add_typer(authz_app, name="authz")
