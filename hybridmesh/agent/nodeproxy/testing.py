"""Test support for the node proxy: a fake control plane serving node snapshots and node signing.

:class:`FakeNodeControl` speaks the real protocols — ``GET /v1/snapshots/nodes/{name}`` long
poll (200 newer / 304 / 404), ``POST /v1/identity/sign`` — and signs node requests exactly as
the control plane's CA hook would: :func:`credentials.authorize_node_request` against the pods of
the published snapshots, then ``MeshCA.sign`` for the pod's identity. Runs on the caller's loop
(:meth:`start`) or in a thread (:meth:`start_in_thread`) for proxies run as processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from hybridmesh._aio import TaskSet
from hybridmesh._http import HttpServer, Request, Response, Router
from hybridmesh.agent.nodeproxy.credentials import (
    NodeRequestRefused,
    NodeTokens,
    authorize_node_request,
)
from hybridmesh.control.model import PodInfo
from hybridmesh.identity.ca import CaError, CsrRejected, MeshCA

__all__ = ["FakeNodeControl", "node_pod", "node_snapshot"]


def node_pod(name: str, ip: str, *, namespace: str = "default", node: str = "n1",
             placement: str = "node", service_account: str | None = None,
             labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One ``pods[]`` entry of a node snapshot (ready)."""
    workload = name.rsplit("-", 1)[0]
    return {"name": name, "namespace": namespace, "workload": workload, "node": node, "ip": ip,
            "serviceAccount": service_account or workload, "placement": placement,
            "labels": dict(labels or {"app": workload}), "ports": [], "ready": True}


def node_snapshot(node: str, pods: Iterable[Mapping[str, Any]],
                  services: Iterable[Mapping[str, Any]] = (), *,
                  policies: Iterable[Mapping[str, Any]] = (),
                  nodes: Mapping[str, str] | None = None, mtls_mode: str = "STRICT",
                  trust_domain: str = "cluster.local") -> dict[str, Any]:
    """A node snapshot as the control plane sends it (the fake adds ``version``)."""
    return {
        "kind": "node", "node": {"name": node},
        "nodes": [{"name": n, "fabricIP": ip} for n, ip in (nodes or {}).items()],
        "pods": [dict(p) for p in pods if p.get("node") == node],
        "mesh": {"trustDomain": trust_domain, "mtlsMode": mtls_mode},
        "services": [dict(s) for s in services], "routes": [],
        "policies": [dict(p) for p in policies],
    }  # fmt: skip


class _Plan:
    def __init__(self, pods: dict[str, PodInfo]) -> None:
        self._pods = pods

    def pod(self, key: str) -> PodInfo | None:
        return self._pods.get(key)


class FakeNodeControl:
    """Node snapshots by node name; ``set()`` publishes, ``delete()`` makes the watch 404."""

    def __init__(self, socket_path: str | Path, trust_domain: str = "cluster.local",
                 cert_ttl: timedelta = timedelta(hours=1)) -> None:
        self.path = str(socket_path)
        self.ca = MeshCA.create_root(trust_domain)
        self.tokens = NodeTokens(trust_domain)
        self.cert_ttl = cert_ttl
        self.version = 0
        self.signed: list[str] = []
        self.refused: list[str] = []
        self._snapshots: dict[str, tuple[int, dict[str, Any]]] = {}
        self._changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._tasks = TaskSet()

    def issue_node_token(self, node: str) -> str:
        return self.tokens.issue(node)

    def plan(self) -> _Plan:
        """The pods of every published node snapshot, as the CA hook sees the plan."""
        pods = {}
        for node, (_v, snap) in self._snapshots.items():
            for raw in snap.get("pods") or ():
                info = PodInfo(str(raw["name"]), str(raw["namespace"]), str(raw["workload"]), 0,
                               node, str(raw["ip"]), str(raw["serviceAccount"]),
                               str(raw["placement"]))
                pods[info.key] = info
        return _Plan(pods)

    # -- publishing ---------------------------------------------------------------------------
    def set(self, node: str, snapshot: Mapping[str, Any]) -> int:
        self.version += 1
        self._snapshots[node] = (self.version, dict(snapshot))
        self._notify()
        return self.version

    def delete(self, node: str) -> None:
        self._snapshots.pop(node, None)
        self._notify()

    def _notify(self) -> None:
        loop, changed = self._loop, self._changed
        if loop is None or changed is None:
            return

        async def wake() -> None:
            async with changed:
                changed.notify_all()

        loop.call_soon_threadsafe(lambda: self._tasks.spawn(wake()))

    # -- serving ------------------------------------------------------------------------------
    async def _watch(self, req: Request, params: dict[str, str]) -> Response:
        assert self._changed is not None
        node = params["name"]
        query = req.query_params()
        after = int(float(query.get("after", "-1")))

        def newer() -> bool:
            entry = self._snapshots.get(node)
            return entry is None or entry[0] > after

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(newer),
                                       float(query.get("timeout", "30")))
        entry = self._snapshots.get(node)
        if entry is None:
            return Response.text(f"no node {node}\n", 404)
        if entry[0] <= after:
            return Response(304, {})
        return Response.json({"version": entry[0], **entry[1]})

    async def _sign(self, req: Request, _params: dict[str, str]) -> Response:
        body = req.json()
        if not isinstance(body, dict) or not {"token", "csr"} <= body.keys():
            return Response.json({"error": "bad-request", "message": "token and csr"}, 400)
        try:
            claims = authorize_node_request(self.tokens, str(body["token"]), self.plan())
            identity = self.ca.identity_for(claims)
            chain = self.ca.sign(str(body["csr"]).encode(), identity, self.cert_ttl)
        except NodeRequestRefused as exc:
            self.refused.append(exc.code)
            return Response.json({"error": exc.code, "message": exc.message}, exc.status)
        except (CsrRejected, CaError) as exc:
            return Response.json({"error": "csr-rejected", "message": str(exc)}, 400)
        self.signed.append(f"{claims.namespace}/{claims.pod}")
        return Response.json({"identity": str(identity), "certificateChain": chain.decode(),
                              "trustBundle": self.ca.bundle_pem.decode()})

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Condition()
        router = Router()
        router.add("GET", "/v1/snapshots/nodes/{name}", self._watch)
        router.add("POST", "/v1/identity/sign", self._sign)
        self._server = HttpServer(router)
        await self._server.start_unix(self.path)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close(timeout=0.5)
        await self._tasks.cancel_all()

    def start_in_thread(self) -> None:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=main, name="hm-fake-node-control", daemon=True)
        self._thread.start()
        ready.wait(5.0)

    def stop_thread(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(5.0)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5.0)
