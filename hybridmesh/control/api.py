"""The control plane's HTTP API: snapshots and a long-poll watch, served on a unix socket.

A filesystem unix socket (not an abstract one, and not TCP) because it is reachable from every
network namespace on the machine while being bound to none of them: proxies and node agents in
pod and node namespaces all reach the same control plane, and nothing listens on the host's
interfaces.

Watch protocol (xDS-like, over plain HTTP): ``GET /v1/snapshots/pods/{ns}/{name}?after=V``
answers at once if the snapshot's version is newer than V, otherwise holds the request until it
is (or until ``timeout`` seconds, default 30, then answers 304 so the client simply asks again).
"""

from __future__ import annotations

from hybridmesh._http.message import HttpError, Request, Response
from hybridmesh._http.router import Router
from hybridmesh.control.plane import ControlPlane, SnapshotKey

__all__ = ["register_routes"]

MAX_WATCH_SECONDS = 300.0


def register_routes(router: Router, control: ControlPlane) -> None:
    async def version(_req: Request, _p: dict[str, str]) -> Response:
        return Response.json({"version": control.version})

    async def services(_req: Request, _p: dict[str, str]) -> Response:
        return Response.json(
            {"version": control.version, "services": [s.to_json() for s in control.services()]}
        )

    async def pod_snapshot(req: Request, p: dict[str, str]) -> Response:
        return await _watch(control, ("pod", f"{p['namespace']}/{p['name']}"), req)

    async def node_snapshot(req: Request, p: dict[str, str]) -> Response:
        return await _watch(control, ("node", p["name"]), req)

    router.add("GET", "/v1/version", version)
    router.add("GET", "/v1/services", services)
    router.add("GET", "/v1/snapshots/pods/{namespace}/{name}", pod_snapshot)
    router.add("GET", "/v1/snapshots/nodes/{name}", node_snapshot)


async def _watch(control: ControlPlane, key: SnapshotKey, req: Request) -> Response:
    query = req.query_params()
    after = _number(query, "after", -1)
    timeout = min(_number(query, "timeout", 30), MAX_WATCH_SECONDS)
    snap = await control.watch(key, int(after), timeout)
    if snap is None:
        raise HttpError(404, f"no {key[0]} {key[1]} in the control plane")
    if snap.version <= after:
        return Response(304, {"X-Hm-Version": str(snap.version)})
    return Response.json(snap.to_json())


def _number(query: dict[str, str], name: str, default: float) -> float:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise HttpError(400, f"query parameter {name} must be a number, got {raw!r}") from None
