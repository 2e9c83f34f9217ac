"""``hybridmesh identity POD [-o json]``: the X.509-SVID a pod's proxy holds right now.

Read from the proxy's admin endpoint (``:15020/config_dump``, its ``identity`` section), not
from the control plane: the CA knows what it *signed*, only the proxy knows what it *serves*
(a renewal may be pending, failing, or not installed yet; the CA may be down). The section is
``Svid.describe()`` plus the renewal state — public facts only; the private key never leaves
the proxy process, so this command cannot print it. Dialled like ``hybridmesh stat``: a socket
made inside the pod's node network namespace.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table

from hybridmesh.cli._output import OutputFormat, OutputOption, console, fail, print_json

__all__ = ["IdentityError", "IdentitySources", "describe_pod", "register"]

Json = dict[str, Any]
_PROXIED = ("sidecar", "sidecar+ebpf")


class IdentityError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class IdentitySources:
    pods: Callable[[], list[Json]]
    config_dump: Callable[[Json], Json]  # pod record → the proxy's /config_dump


def lab_sources(timeout: float = 3.0) -> IdentitySources:
    from hybridmesh.lab import names, netns
    from hybridmesh.lab.client import DaemonUnavailable, LabClient
    from hybridmesh.telemetry.fetch import ADMIN_PORT, FetchError, http_get

    def pods() -> list[Json]:
        try:
            found: list[Json] = LabClient().status()["pods"]
        except DaemonUnavailable as exc:
            raise IdentityError(str(exc), "start a lab: `hybridmesh lab up FILE`") from exc
        return found

    def config_dump(pod: Json) -> Json:
        try:
            sock = netns.connect(names.node_netns(pod["node"]), pod["ip"], ADMIN_PORT, timeout)
            text = http_get(sock, f"{pod['ip']}:{ADMIN_PORT}", "/config_dump", timeout)
            doc: Json = json.loads(text)
        except (OSError, FetchError, ValueError) as exc:
            raise IdentityError(f"cannot read the proxy of {_key(pod)}: {exc}",
                                f"check it runs: `hybridmesh lab logs {_key(pod)}`") from exc
        return doc

    return IdentitySources(pods, config_dump)


def _key(pod: Mapping[str, Any]) -> str:
    return f"{pod['namespace']}/{pod['name']}"


def _find(pods: list[Json], text: str) -> Json:
    namespace, _, name = text.rpartition("/")
    hits = [p for p in pods if p["name"] == name and namespace in ("", p["namespace"])]
    if not hits:
        raise IdentityError(f"no pod {text!r} in the lab", "list pods: `hybridmesh lab status`")
    if len(hits) > 1:
        raise IdentityError(f"pod name {text!r} is ambiguous",
                            "write it NAMESPACE/POD: " + ", ".join(_key(p) for p in hits))
    return hits[0]


def describe_pod(sources: IdentitySources, text: str, now: datetime | None = None) -> Json:
    """The JSON ``-o json`` prints: the pod and, per proxy worker, its SVID facts."""
    pod = _find(sources.pods(), text)
    placement = pod.get("placement")
    if placement not in _PROXIED:
        raise IdentityError(f"{_key(pod)} has no proxy (placement {placement}), so no identity",
                            "only sidecar pods hold an X.509-SVID")
    dump = sources.config_dump(pod)
    workers = [w for w in dump.get("workers", [dump]) if w is not None]
    now = now or datetime.now(UTC)
    identities = [_worker(w, now) for w in workers]
    if not identities or all(i is None for i in identities):
        raise IdentityError(f"the proxy of {_key(pod)} runs without mTLS (no identity)",
                            "the lab enables identity for sidecar pods of a mesh with a CA")
    return {"pod": _key(pod), "placement": placement, "workers": identities}


def _worker(dump: Mapping[str, Any], now: datetime) -> Json | None:
    ident = dump.get("identity")
    if not isinstance(ident, Mapping):
        return None
    svid: Mapping[str, Any] = ident.get("svid") or {}
    renew_at = ident.get("renew_at")
    not_after = svid.get("not_after")
    return {
        "pid": dump.get("pid"),
        "state": ident.get("state"),
        "spiffeId": svid.get("identity") or ident.get("wanted"),
        "serial": svid.get("serial"),
        "notBefore": svid.get("not_before"),
        "notAfter": not_after,
        "issuer": svid.get("issuer"),
        "keyType": svid.get("key_type"),
        "publicKeySha256": svid.get("public_key_sha256"),
        "renewAt": renew_at,
        "secondsToRenewal": _seconds(renew_at, now),
        "secondsToExpiry": _seconds(not_after, now),
        "generation": ident.get("generation"),
        "renewals": ident.get("renewals"),
        "failures": ident.get("failures"),
        "lastError": ident.get("last_error"),
    }


def _seconds(stamp: object, now: datetime) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return round((when - now).total_seconds(), 1)


def _print(result: Json) -> None:
    for worker in result["workers"]:
        table = Table(title=f"{result['pod']} (proxy pid {worker['pid']})", show_header=False)
        for label, key in (("SPIFFE ID", "spiffeId"), ("state", "state"), ("serial", "serial"),
                           ("not before", "notBefore"), ("not after", "notAfter"),
                           ("issuer", "issuer"), ("key", "keyType"), ("renew at", "renewAt"),
                           ("renewal in (s)", "secondsToRenewal"),
                           ("expiry in (s)", "secondsToExpiry"), ("renewals", "renewals"),
                           ("failures", "failures"), ("last error", "lastError")):
            value = worker.get(key)
            table.add_row(label, "-" if value is None else str(value))
        console.print(table)


def register(app: typer.Typer, *,
             sources: Callable[[], IdentitySources] = lab_sources) -> None:
    @app.command("identity")
    def identity(
        pod: str = typer.Argument(..., help="[namespace/]pod"),
        output: OutputFormat = OutputOption,
    ) -> None:
        """Show the X.509-SVID a pod's proxy serves: SPIFFE ID, serial, validity, issuer and
        time to renewal (never the key)."""
        try:
            result = describe_pod(sources(), pod)
        except IdentityError as exc:
            fail(exc.message, exc.hint)
        if output is OutputFormat.json:
            print_json(result)
        else:
            _print(result)
