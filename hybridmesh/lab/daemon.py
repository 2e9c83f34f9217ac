"""The lab daemon: one process that owns a running lab until ``lab down``.

``lab up`` starts it detached (in the ``hm-lab/hm-daemon`` cgroup, so ``lab down`` can always
find it) and returns once the daemon reports every pod ready. The daemon serves the control
plane API and the lab API on one unix socket, supervises the pods and keeps service rules and
DNS in sync with readiness, like a kubelet + kube-proxy + API server on one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from hybridmesh import env as hm_env
from hybridmesh._http.message import HttpError, Request, Response
from hybridmesh._http.router import Router
from hybridmesh._http.server import HttpServer
from hybridmesh.control.api import register_routes
from hybridmesh.control.identity import IdentityAuthority, load_ca, register_identity_routes
from hybridmesh.control.ipam import AddressError
from hybridmesh.control.plane import ControlPlane
from hybridmesh.identity.ca import CaError
from hybridmesh.lab._nodecontrol import node_control_router, node_control_socket
from hybridmesh.lab.cgroups import detect_layout
from hybridmesh.lab.lab import Lab, PlacementError, pod_environment
from hybridmesh.lab.nodeproxies import UpgradeError
from hybridmesh.lab.sidecar import PROXY_UID, proxy_uid
from hybridmesh.lab.tokens import PodTokens
from hybridmesh.resources import Resource, ResourceError, build_topology, load_documents, merge

__all__ = ["main", "read_sources", "sources_path", "write_sources"]

log = logging.getLogger("hybridmesh.lab.daemon")


def sources_path() -> Path:
    return hm_env.STATE_DIR / "sources.json"


def read_sources() -> list[dict[str, str]]:
    data: list[dict[str, str]] = json.loads(sources_path().read_text())
    return data


def write_sources(sources: list[dict[str, str]]) -> None:
    tmp = sources_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(sources))
    tmp.replace(sources_path())


def resources_from(sources: list[dict[str, str]]) -> list[Resource]:
    merged: list[Resource] = []
    for src in sources:
        merged = merge(merged, load_documents(src["text"], src["source"]))
    return merged


def make_authority(control: ControlPlane) -> IdentityAuthority:
    """The mesh CA for the topology's trust domain, its key in this process's memory only;
    an intermediate under the user's root when ``HM_CA_CERT``/``HM_CA_KEY`` name one. It also
    signs node proxies' requests for their own node's pods (node tokens)."""
    cert, key = os.environ.get(hm_env.CA_CERT_ENV), os.environ.get(hm_env.CA_KEY_ENV)
    ca = load_ca(control.topology.mesh.spec.trust_domain,
                 root_cert=Path(cert) if cert else None, root_key=Path(key) if key else None)
    return IdentityAuthority(ca, control)


class Daemon:
    def __init__(self) -> None:
        self.sources = read_sources()
        self.resources = resources_from(self.sources)
        self.control = ControlPlane(build_topology(self.resources))
        self.identity = make_authority(self.control)
        tokens = PodTokens(self.identity.issue_token, proxy_uid)
        self.lab = Lab(self.control, detect_layout(), tokens=tokens,
                       node_token=self.identity.issue_node_token)
        self.shutdown = asyncio.Event()
        self._apply_lock = asyncio.Lock()

    def router(self) -> Router:
        router = Router()
        register_routes(router, self.control)
        register_identity_routes(router, self.identity)
        router.add("GET", "/v1/lab/status", self._status)
        router.add("GET", "/v1/lab/pods/{namespace}/{name}", self._pod)
        router.add("POST", "/v1/lab/apply", self._apply)
        router.add("POST", "/v1/lab/agents/{node}/restart", self._restart_agent)
        router.add("GET", "/v1/lab/nodes", self._node_proxies)
        router.add("POST", "/v1/lab/nodes/{node}/upgrade", self._upgrade_node)
        router.add("POST", "/v1/lab/shutdown", self._shutdown)
        return router

    async def _status(self, _req: Request, _p: dict[str, str]) -> Response:
        return Response.json({"daemonPid": os.getpid(), **self.lab.status(),
                              "identity": self.identity.describe()})

    async def _pod(self, _req: Request, p: dict[str, str]) -> Response:
        pod = self.control.plan.pod(f"{p['namespace']}/{p['name']}")
        if pod is None:
            raise HttpError(404, f"no pod {p['namespace']}/{p['name']}")
        return Response.json(
            {**self.lab.pod_status(pod), "env": pod_environment(pod), "command": list(pod.command)}
        )

    async def _apply(self, req: Request, _p: dict[str, str]) -> Response:
        body = req.json()
        if not isinstance(body, dict) or not {"source", "text"} <= body.keys():
            raise HttpError(400, 'body must be {"source": NAME, "text": YAML}')
        async with self._apply_lock:
            try:
                merged = merge(self.resources, load_documents(body["text"], body["source"]))
                change = await self.lab.apply(merged)
            except ResourceError as exc:
                return Response.json(
                    {
                        "problems": [
                            {"file": p.source, "line": p.line, "message": p.message}
                            for p in exc.problems
                        ]
                    },
                    422,
                )
            except (PlacementError, AddressError) as exc:
                return Response.json({"problems": [{"message": str(exc)}]}, 422)
            self.resources = merged
            self.sources.append({"source": body["source"], "text": body["text"]})
            write_sources(self.sources)
        return Response.json(
            {
                "version": self.control.version,
                "podsAdded": [p.key for p in change.pods_added],
                "podsRemoved": [p.key for p in change.pods_removed],
                "nodesAdded": [n.name for n in change.nodes_added],
                "nodesRemoved": [n.name for n in change.nodes_removed],
                "servicesChanged": change.services_changed,
            }
        )

    async def _restart_agent(self, _req: Request, p: dict[str, str]) -> Response:
        try:
            result = await self.lab.restart_agent(p["node"])
        except KeyError:
            nodes = ", ".join(n.name for n in self.control.plan.nodes)
            raise HttpError(404, f"no agent for node {p['node']} (nodes: {nodes})") from None
        return Response.json(result)

    async def _node_proxies(self, _req: Request, _p: dict[str, str]) -> Response:
        return Response.json({"nodeProxies": self.lab.node_proxies.status()})

    async def _upgrade_node(self, _req: Request, p: dict[str, str]) -> Response:
        try:
            result = await self.lab.upgrade_node_proxy(p["node"])
        except KeyError:
            running = ", ".join(self.lab.node_proxies.nodes()) or "none"
            raise HttpError(404, f"no node proxy on node {p['node']} (node proxies: {running}; "
                                 "a node runs one once it hosts a placement: node pod)") from None
        except UpgradeError as exc:
            raise HttpError(409, str(exc)) from None
        return Response.json(result)

    async def _shutdown(self, _req: Request, _p: dict[str, str]) -> Response:
        self.shutdown.set()
        return Response.json({"stopping": True}, 202)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.shutdown.set)
        server = HttpServer(self.router())
        await server.start_unix(hm_env.api_socket(), mode=0o600)
        control_router = Router()
        register_routes(control_router, self.control)
        register_identity_routes(control_router, self.identity)  # proxies get their SVIDs
        control = HttpServer(control_router)
        await control.start_unix(hm_env.control_socket(), mode=0o600)
        os.chown(hm_env.control_socket(), PROXY_UID, 0)  # the proxy uid reads, nobody else
        node_control = HttpServer(node_control_router(self.control, self.identity))
        node_control_socket().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        await node_control.start_unix(node_control_socket(), mode=0o600)  # node proxies: root
        up = loop.create_task(self._up())
        await self.shutdown.wait()
        log.info("shutting down: stopping pods")
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await up
        await self.lab.stop()
        await node_control.close(timeout=2)
        await control.close(timeout=2)
        await server.close(timeout=2)

    async def _up(self) -> None:
        try:
            await self.lab.up()
            log.info("lab ready")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.lab.phase = "Failed"
            self.lab.message = f"{type(exc).__name__}: {exc}"
            log.error("lab up failed:\n%s", traceback.format_exc())


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a hard dependency; stay usable anyway
        pass
    asyncio.run(_main())


async def _main() -> Any:
    try:
        daemon = Daemon()
    except CaError as exc:
        log.error("cannot create the mesh CA: %s (check %s and %s)", exc, hm_env.CA_CERT_ENV,
                  hm_env.CA_KEY_ENV)
        raise SystemExit(1) from None
    await daemon.run()


if __name__ == "__main__":
    main()
