"""HTTPRoute resources compiled into the JSON shape proxies consume.

Compilation resolves what the Gateway API leaves implicit (namespaces of refs, default ports,
durations in milliseconds) once, in the control plane, so every proxy applies identical rules
and no proxy needs to know YAML or the resource model.

Shape of one compiled route (list under ``routes`` in pod and node snapshots)::

    {"name": "ns/route", "service": "ns/svc", "port": 80 | null, "hostnames": [...],
     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                             "headers": [{"type": "Exact", "name": "x", "value": "y"}],
                             "method": "GET" | null}],
                "backends": [{"service": "ns/svc", "port": 80 | null, "weight": 1}],
                "timeouts": {"requestMs": 1000 | null, "backendRequestMs": null},
                "retry": {"codes": [503], "attempts": 2, "backoffMs": 25} | null}]}
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hybridmesh.resources import HTTPRoute, Topology

__all__ = ["compile_routes"]


def _ms(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds() * 1000)


def compile_routes(topology: Topology) -> list[dict[str, Any]]:
    compiled = []
    for route in topology.http_routes:
        for parent in route.spec.parent_refs:
            compiled.append(
                _compile(
                    route, parent.namespace or route.metadata.namespace, parent.name, parent.port
                )
            )
    return compiled


def _compile(route: HTTPRoute, namespace: str, service: str, port: int | None) -> dict[str, Any]:
    ns = route.metadata.namespace
    rules = []
    for rule in route.spec.rules:
        backends = [
            {"service": f"{b.namespace or ns}/{b.name}", "port": b.port, "weight": b.weight}
            for b in rule.backend_refs
        ] or [{"service": f"{namespace}/{service}", "port": port, "weight": 1}]
        rules.append(
            {
                "matches": [
                    {
                        "path": {"type": m.path.type, "value": m.path.value},
                        "headers": [
                            {"type": h.type, "name": h.name.lower(), "value": h.value}
                            for h in m.headers
                        ],
                        "method": m.method,
                    }
                    for m in rule.matches
                ],
                "backends": backends,
                "timeouts": {
                    "requestMs": _ms(rule.timeouts.request) if rule.timeouts else None,
                    "backendRequestMs": _ms(rule.timeouts.backend_request)
                    if rule.timeouts
                    else None,
                },
                "retry": None
                if rule.retry is None
                else {
                    "codes": list(rule.retry.codes),
                    "attempts": rule.retry.attempts,
                    "backoffMs": _ms(rule.retry.backoff) or 25,
                },
            }
        )
    return {
        "name": f"{ns}/{route.metadata.name}",
        "service": f"{namespace}/{service}",
        "port": port,
        "hostnames": list(route.spec.hostnames),
        "rules": rules,
    }
