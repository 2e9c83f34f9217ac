"""The node proxy process: snapshot watch, identities, listeners, admin, handover.

Listeners (in the node's netns): the outbound listener (15001) where the steering programs send
node pods' connections, the tunnel listener (15008, mTLS HTTP/2 CONNECT from other node
proxies), admin (15020: ``/metrics``, ``/ready``, ``/live``, ``/config_dump``). The first two
are sockets this process creates or inherits (``handoff``): that is what makes an upgrade
hitless.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hybridmesh._aio import TaskSet
from hybridmesh._http import HttpClient, Request, Response, Router
from hybridmesh._http.server import HttpServer
from hybridmesh.agent.nodeproxy import inbound
from hybridmesh.agent.nodeproxy._tunnelio import TunnelConn
from hybridmesh.agent.nodeproxy.context import NodeConfig, NodeContext
from hybridmesh.agent.nodeproxy.handoff import HandoffServer
from hybridmesh.agent.nodeproxy.identities import NodeIdentities
from hybridmesh.agent.nodeproxy.outbound import Accepted
from hybridmesh.agent.nodeproxy.source import CgroupIndex, SourceResolver
from hybridmesh.agent.nodeproxy.tunnels import serve_tls
from hybridmesh.agent.nodeproxy.upstream import SocketFactory, plain_socket
from hybridmesh.agent.nodeproxy.view import LocalPod, NodeView, ViewError, build_view
from hybridmesh.proxy.discovery import Watcher

__all__ = ["NodeProxy", "NodeWatcher", "listen"]

log = logging.getLogger(__name__)


def listen(addr: tuple[str, int], backlog: int = 4096) -> socket.socket:
    """A listening TCP socket we own (so it can be handed to a successor)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class NodeWatcher(Watcher):
    """The sidecar's watch loop (long-poll, backoff), on the node snapshot path."""

    def __init__(self, client: HttpClient, node: str, on_view: Callable[[NodeView], None],
                 on_deleted: Callable[[], None]) -> None:
        super().__init__(client, "", lambda _t: None, on_deleted)
        self._path = f"/v1/snapshots/nodes/{node}"
        self._on_view = on_view

    def _accept(self, doc: Any) -> None:
        version = doc.get("version") if isinstance(doc, dict) else None
        if not isinstance(version, int):
            return
        self.version = version
        try:
            view = build_view(doc)
        except ViewError as exc:
            log.error("node snapshot %d ignored: %s", version, exc)
            return
        self._on_view(view)


class NodeProxy:
    """One node proxy process (see the module docstring)."""

    def __init__(self, config: NodeConfig, resolver: SourceResolver, index: CgroupIndex,
                 cgroup_of: Callable[[LocalPod], Path], *, handoff: Path | None = None,
                 source_socket: SocketFactory = plain_socket) -> None:
        self.tasks = TaskSet()
        identities = NodeIdentities(config.control_socket, Path(config.token_file),
                                    self.tasks.spawn)
        self.ctx = NodeContext(config, resolver, identities, self.tasks, source_socket)
        self._index = index
        self._cgroup_of = cgroup_of
        self._handoff = HandoffServer(handoff, self._listeners, self.hand_over) \
            if handoff is not None else None
        self._sockets: dict[str, socket.socket] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._accepting: asyncio.Task[None] | None = None
        self._tunnels: set[TunnelConn] = set()
        self._admin: HttpServer | None = None
        self._client = HttpClient(unix_path=config.control_socket)
        self.done = asyncio.Event()

    # -- snapshot -----------------------------------------------------------------------------
    def set_view(self, view: NodeView) -> None:
        self.ctx.view = view
        self._index.set_pods({p.key: self._cgroup_of(p) for p in view.served()})
        self.ctx.identities.sync(view)

    # -- start --------------------------------------------------------------------------------
    async def start(self, inherited: dict[str, socket.socket] | None = None) -> None:
        config, loop = self.ctx.config, asyncio.get_running_loop()
        watcher = NodeWatcher(self._client, config.node, self.set_view, self._deleted)
        self.tasks.spawn(watcher.run(), name="hm-node-watch")
        sockets = inherited or {"outbound": listen(config.outbound),
                                "tunnel": listen(config.tunnel)}
        self._sockets = sockets
        for sock in sockets.values():
            sock.setblocking(False)
        self._servers = [
            await loop.create_server(lambda: Accepted(self.ctx), sock=sockets["outbound"])]
        self._accepting = self.tasks.spawn(self._accept_tunnels(sockets["tunnel"]),
                                           name="hm-node-tunnel-accept")

    async def start_control(self) -> None:
        """Admin port and handoff socket (after a takeover: once the old process let go)."""
        self._admin = await self._start_admin()
        if self._handoff is not None:
            await self._handoff.start()

    async def _start_admin(self) -> HttpServer:
        admin = HttpServer(self._router())
        for attempt in range(50):
            try:
                await admin.start_tcp(*self.ctx.config.admin)
                return admin
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == 49:
                    raise
                await asyncio.sleep(0.1)
        return admin

    def _listeners(self) -> dict[str, socket.socket]:
        return dict(self._sockets)

    async def _accept_tunnels(self, listener: socket.socket) -> None:
        loop, ctx = asyncio.get_running_loop(), self.ctx
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("tunnel accept: %s", exc)
                await asyncio.sleep(0.1)
                continue
            context = ctx.identities.server_context()
            if context is None:
                sock.close()
                ctx.metrics.refuse("tunnel-no-identity")
                continue
            self.tasks.spawn(serve_tls(
                sock, context, on_request=lambda c, ev: inbound.on_request(ctx, c, ev),
                on_ready=self._tunnels.add, on_closed=self._tunnels.discard,
                on_refused=lambda r: ctx.metrics.refuse(f"tunnel-{r}")), name="hm-tunnel-tls")

    def _deleted(self) -> None:
        log.warning("node %s is gone from the control plane; draining", self.ctx.config.node)
        self.tasks.spawn(self.hand_over(), name="hm-node-drain")

    # -- handover and shutdown ----------------------------------------------------------------
    async def hand_over(self) -> None:
        """Stop accepting, let go of admin, GOAWAY to tunnel peers, finish what is open."""
        self._stop_accepting()
        if self._handoff is not None:
            self._handoff.close()
        if self._admin is not None:
            await self._admin.close(timeout=0.5)
            self._admin = None
        for conn in list(self._tunnels):
            conn.drain()
        self.ctx.pool.drain()
        deadline = asyncio.get_running_loop().time() + self.ctx.config.drain_timeout_s
        while self.ctx.active > 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        log.info("drained (%d left); exiting", self.ctx.active)
        self.done.set()

    def _stop_accepting(self) -> None:
        for server in self._servers:
            server.close()
        self._servers = []
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None
            self._sockets["tunnel"].close()

    async def close(self) -> None:
        self._stop_accepting()
        if self._admin is not None:
            await self._admin.close(timeout=0.5)
        for conn in list(self._tunnels):
            if conn.transport is not None:
                conn.transport.abort()
        await self.ctx.identities.close()
        await self.tasks.cancel_all()
        await self._client.close()

    # -- admin ----------------------------------------------------------------------------------
    def _router(self) -> Router:
        router = Router()
        ctx = self.ctx

        async def metrics(_r: Request, _p: dict[str, str]) -> Response:
            return Response(200, {"Content-Type": "text/plain; version=0.0.4"},
                            ctx.metrics.exposition())

        async def ready(_r: Request, _p: dict[str, str]) -> Response:
            view = ctx.view
            missing = [p.key for p in view.served() if ctx.identities.material(p.key) is None] \
                if view is not None else ["snapshot"]
            return Response.json({"ready": not missing, "waiting": missing},
                                 200 if not missing else 503)

        async def live(_r: Request, _p: dict[str, str]) -> Response:
            return Response.json({"live": True, "pid": os.getpid()})

        async def dump(_r: Request, _p: dict[str, str]) -> Response:
            return Response.json(self.describe())

        router.add("GET", "/metrics", metrics)
        router.add("GET", "/ready", ready)
        router.add("GET", "/live", live)
        router.add("GET", "/config_dump", dump)
        return router

    def describe(self) -> dict[str, Any]:
        """Public facts only: never key material (``Svid.describe`` has none)."""
        ctx, view = self.ctx, self.ctx.view
        return {
            "node": ctx.config.node, "pid": os.getpid(),
            "version": view.version if view else None,
            "served": [p.key for p in view.served()] if view else [],
            "identities": ctx.identities.describe(),
            "limits": {"perWorkload": {"maxConnections": ctx.config.limits.max_connections,
                                       "ratePerS": ctx.config.limits.rate,
                                       "burst": ctx.config.limits.burst,
                                       "maxStreams": ctx.config.limits.max_streams},
                       "outbound": ctx.outbound_limits.usage(),
                       "inbound": ctx.inbound_limits.usage()},
            "tunnels": {"client": ctx.pool.connections, "server": len(self._tunnels)},
            "active": ctx.active,
        }  # fmt: skip
