"""Test support that lives with the code: a fake control plane and snapshot builders.

:class:`FakeControlPlane` serves the real watch protocol (``GET
/v1/snapshots/pods/{ns}/{name}?after=V&timeout=T``: 200 with a newer snapshot, 304 after the
timeout, 404 once the pod is deleted) on a unix socket, from a snapshot the test writes. It runs
on the caller's event loop (:meth:`start`) or in a thread of its own (:meth:`start_in_thread`),
for tests that run the proxy as a separate process.

It is also the mesh CA when given one (:meth:`enable_identity`): ``POST /v1/identity/sign``
and ``GET /v1/identity/bundle`` behave as ``hybridmesh.control.identity`` does (token verified,
pod present in the published snapshots with that service account, exactly its SPIFFE ID
signed), with switches a test needs: ``ca_available`` (False answers 503, as an unreachable
CA would be for the proxy), ``cert_ttl`` (per issuance) and ``sign_requests`` (a count).
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
from hybridmesh.identity.bootstrap import InvalidBootstrapToken
from hybridmesh.identity.ca import CaError, CsrRejected, MeshCA

__all__ = ["FakeControlPlane", "endpoint", "pod_snapshot", "service"]


def endpoint(pod: str, ip: str, *, namespace: str = "default", placement: str = "sidecar",
             service_account: str = "default", node: str = "n1") -> dict[str, Any]:
    """One ``endpoints[]`` entry of a snapshot service."""
    return {"pod": pod, "namespace": namespace, "ip": ip, "node": node,
            "serviceAccount": service_account, "placement": placement}


def service(name: str, cluster_ip: str, ports: Iterable[tuple[int, int] | tuple[int, int, str]],
            endpoints: Iterable[Mapping[str, Any]] = (), *, namespace: str = "default",
            selector: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One ``services[]`` entry; ports are (port, targetPort[, appProtocol])."""
    return {
        "name": name, "namespace": namespace, "clusterIP": cluster_ip,
        "ports": [{"name": f"p{p[0]}", "port": p[0], "targetPort": p[1],
                   "appProtocol": p[2] if len(p) > 2 else None} for p in ports],
        "selector": dict(selector or {"app": name}),
        "endpoints": [dict(e) for e in endpoints],
    }  # fmt: skip


def pod_snapshot(pod: str, ip: str, services: Iterable[Mapping[str, Any]] = (), *,
                 namespace: str = "default", workload: str | None = None,
                 labels: Mapping[str, str] | None = None,
                 routes: Iterable[Mapping[str, Any]] = (), mtls_mode: str = "PERMISSIVE",
                 trust_domain: str = "cluster.local",
                 service_account: str | None = None,
                 policies: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A pod snapshot as the control plane sends it (without ``version``: the fake adds it).
    The service account defaults to the workload's name; ``policies`` are AuthorizationPolicy
    documents in their snapshot JSON shape."""
    workload = workload or pod.rsplit("-", 1)[0]
    return {
        "kind": "pod",
        "pod": {"name": pod, "namespace": namespace, "workload": workload, "node": "n1",
                "ip": ip, "serviceAccount": service_account or workload, "placement": "sidecar",
                "labels": dict(labels or {"app": workload}), "ports": []},
        "mesh": {"trustDomain": trust_domain, "mtlsMode": mtls_mode},
        "services": [dict(s) for s in services],
        "routes": [dict(r) for r in routes],
        "policies": [dict(p) for p in policies],
    }  # fmt: skip


class FakeControlPlane:
    """Serves snapshots for pods; ``set()`` publishes a new version, ``delete()`` a 404."""

    def __init__(self, socket_path: str | Path) -> None:
        self.path = str(socket_path)
        self.version = 0
        self.requests = 0
        self._snapshots: dict[str, tuple[int, dict[str, Any]]] = {}
        self._changed: asyncio.Condition | None = None
        self._server: HttpServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks = TaskSet()
        self.ca: MeshCA | None = None
        self.cert_ttl = timedelta(hours=1)
        self.ca_available = True
        self.sign_requests = 0

    # -- identity ---------------------------------------------------------------------------------
    def enable_identity(self, trust_domain: str = "cluster.local",
                        cert_ttl: timedelta = timedelta(hours=1)) -> MeshCA:
        """Become the mesh CA for ``trust_domain`` (a fresh root); returns it."""
        self.ca = MeshCA.create_root(trust_domain)
        self.cert_ttl = cert_ttl
        return self.ca

    def issue_token(self, pod_key: str, service_account: str | None = None,
                    ttl: timedelta = timedelta(hours=1)) -> str:
        """The bootstrap token of a published pod (its snapshot's service account by
        default)."""
        assert self.ca is not None, "call enable_identity() first"
        namespace, _, name = pod_key.partition("/")
        sa = service_account or str(self._snapshots[pod_key][1]["pod"]["serviceAccount"])
        return self.ca.issue_bootstrap_token(namespace, sa, name, ttl=ttl)

    async def _sign(self, req: Request, _params: dict[str, str]) -> Response:
        self.sign_requests += 1
        ca = self.ca
        if ca is None or not self.ca_available:
            return Response.json({"error": "ca-unavailable", "message": "CA is down (test)"}, 503)
        body = req.json()
        if not isinstance(body, dict) or not {"token", "csr"} <= body.keys():
            return Response.json({"error": "bad-request", "message": "token and csr"}, 400)
        try:
            claims = ca.verify_bootstrap_token(str(body["token"]))
        except InvalidBootstrapToken as exc:
            return Response.json({"error": "invalid-token", "message": str(exc)}, 401)
        entry = self._snapshots.get(f"{claims.namespace}/{claims.pod}")
        if entry is None or entry[1]["pod"].get("serviceAccount") != claims.service_account:
            return Response.json({"error": "pod-gone", "message": "no such pod/SA"}, 403)
        identity = ca.identity_for(claims)
        try:
            chain = ca.sign(str(body["csr"]).encode(), identity, self.cert_ttl)
        except (CsrRejected, CaError) as exc:
            return Response.json({"error": "csr-rejected", "message": str(exc)}, 400)
        return Response.json({"identity": str(identity), "certificateChain": chain.decode(),
                              "trustBundle": ca.bundle_pem.decode()})

    async def _bundle(self, _req: Request, _params: dict[str, str]) -> Response:
        if self.ca is None:
            return Response.text("no CA\n", 404)
        return Response(200, {"Content-Type": "application/x-pem-file"}, self.ca.bundle_pem)

    # -- publishing ------------------------------------------------------------------------------
    def set(self, pod_key: str, snapshot: Mapping[str, Any]) -> int:
        """Publish ``snapshot`` for ``ns/name``; returns its version. Thread-safe."""
        self.version += 1
        self._snapshots[pod_key] = (self.version, dict(snapshot))
        self._notify()
        return self.version

    def delete(self, pod_key: str) -> None:
        self._snapshots.pop(pod_key, None)
        self._notify()

    def _notify(self) -> None:
        loop = self._loop
        if loop is None or self._changed is None:
            return

        async def wake() -> None:
            assert self._changed is not None
            async with self._changed:
                self._changed.notify_all()

        def schedule() -> None:
            self._tasks.spawn(wake())

        loop.call_soon_threadsafe(schedule)

    # -- serving ---------------------------------------------------------------------------------
    async def _watch(self, req: Request, params: dict[str, str]) -> Response:
        self.requests += 1
        assert self._changed is not None
        key = f"{params['namespace']}/{params['name']}"
        query = req.query_params()
        after = int(float(query.get("after", "-1")))
        timeout = float(query.get("timeout", "30"))

        def newer() -> bool:
            entry = self._snapshots.get(key)
            return entry is None or entry[0] > after

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(newer), timeout)
        entry = self._snapshots.get(key)
        if entry is None:
            return Response.text(f"no pod {key}\n", 404)
        if entry[0] <= after:
            return Response(304, {"X-Hm-Version": str(entry[0])})
        return Response.json({"version": entry[0], **entry[1]})

    async def start(self) -> None:
        """Serve on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Condition()
        router = Router()
        router.add("GET", "/v1/snapshots/pods/{namespace}/{name}", self._watch)
        router.add("POST", "/v1/identity/sign", self._sign)
        router.add("GET", "/v1/identity/bundle", self._bundle)
        self._server = HttpServer(router)
        await self._server.start_unix(self.path)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close(timeout=0.5)

    def start_in_thread(self) -> None:
        """Serve from a private loop in a daemon thread (for proxies run as processes)."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=main, name="hm-fake-control", daemon=True)
        self._thread.start()
        ready.wait(5.0)

    def stop_thread(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self.close(), loop)
        with contextlib.suppress(Exception):
            fut.result(5.0)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5.0)
