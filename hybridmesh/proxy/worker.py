"""One proxy worker: listeners, the discovery watch, upkeep, graceful drain.

A worker is the whole data plane in one event loop. ``--workers N`` runs N of them as separate
processes (server.py), each binding the same listener ports with ``SO_REUSEPORT`` so the kernel
spreads new connections across them; each has its own tables, balancers, pools and metrics.

Drain (SIGTERM, ``POST /shutdown``, or the pod's snapshot answering 404): stop accepting (close
the listening sockets), close idle client connections, let in-flight requests finish — their
responses carry ``connection: close`` — and after the grace period abort what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from hybridmesh._http import HttpClient
from hybridmesh.proxy._sockopt import set_mark
from hybridmesh.proxy.config import INBOUND_PORT, TUNNEL_PORT, ProxyConfig
from hybridmesh.proxy.context import OriginalDst, ProxyContext
from hybridmesh.proxy.discovery import Tables, Watcher
from hybridmesh.proxy.listener import INBOUND, OUTBOUND, Accepted
from hybridmesh.proxy.policy_hook import InboundAuthz
from hybridmesh.telemetry.proxy_metrics import AccessLog, ProxyMetrics

__all__ = ["ListenError", "Worker", "listen_socket"]

log = logging.getLogger(__name__)

_SWEEP_S = 15.0


class ListenError(OSError):
    """A listener port could not be bound (the message names the port and why)."""


def listen_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening TCP socket; ``reuse_port`` lets sibling workers bind the same port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(4096)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


class Worker:
    """Listeners + discovery + drain for one process (see the module docstring)."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        original_dst: OriginalDst | None = None,
        metrics: ProxyMetrics | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.config = config
        self.ctx = ProxyContext(config, original_dst=original_dst, metrics=metrics,
                                access_log=access_log)
        self.ctx.policy = InboundAuthz()
        self.outbound_port = 0
        self.inbound_port = 0
        self.deleted = False
        self._servers: list[asyncio.AbstractServer] = []
        self._client = HttpClient(unix_path=config.control_socket)
        self._first = asyncio.Event()
        self._stopped = asyncio.Event()
        self._draining: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._upkeep: asyncio.Task[None] | None = None

    # -- start ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind both listeners and start watching the control plane (ListenError)."""
        self.ctx.loop = asyncio.get_running_loop()
        self._check_mark()
        self._start_identity()
        self.outbound_port = await self._listen(OUTBOUND, self.config.outbound_port)
        self.inbound_port = await self._listen(INBOUND, self.config.inbound_port)
        if self.ctx.mtls is not None:  # HBONE on 15008; any port when 15006 is moved (tests)
            from hybridmesh.proxy.hbone_listen import listen_hbone

            port = TUNNEL_PORT if self.config.inbound_port == INBOUND_PORT else 0
            self._servers.append(listen_hbone(self.ctx, self.config.bind_host, port,
                                              reuse_port=self.config.workers > 1))
        watcher = Watcher(self._client, self.config.pod_key, self._install, self._pod_deleted,
                          timeout_s=self.config.watch_timeout_s)
        self._watcher = watcher
        self._watch = self.ctx.tasks.spawn(watcher.run(), name="hm-proxy-watch")
        self._upkeep = self.ctx.tasks.spawn(self._sweep(), name="hm-proxy-upkeep")

    def _check_mark(self) -> None:
        """SO_MARK needs CAP_NET_ADMIN; without it run unmarked and say what capture needs."""
        if self.ctx.mark is None:
            return
        with socket.socket() as probe:
            try:
                set_mark(probe, self.ctx.mark)
            except PermissionError:
                log.warning("cannot set SO_MARK (no CAP_NET_ADMIN): upstream sockets are "
                            "unmarked; capture must exempt uid %d", os.geteuid())
                self.ctx.disable_mark()

    def _start_identity(self) -> None:
        """With a bootstrap token: an SVID manager and mTLS to meshed peers (mtls.py)."""
        if self.config.token_file is None:
            return
        # imported here: identity and mtls pull in cryptography (~17 MB RSS, ~11 MB PSS),
        # which a proxy without mTLS never needs
        from hybridmesh.proxy.identity import SvidManager
        from hybridmesh.proxy.mtls import MeshTls

        identity = SvidManager(self.config.control_socket, Path(self.config.token_file))
        self.ctx.mtls = MeshTls(self.ctx, identity)
        identity.start(self.ctx.tasks.spawn)

    def exposition(self) -> bytes:
        """``/metrics``: request metrics, authorization decisions, then the identity/mTLS
        series when enabled."""
        text = self.ctx.metrics.exposition()
        if self.ctx.policy is not None:
            text += self.ctx.policy.metrics.exposition()
        mesh = self.ctx.mtls
        return text if mesh is None else text + mesh.exposition()

    async def _listen(self, direction: str, port: int) -> int:
        sock = listen_socket(self.config.bind_host, port, reuse_port=self.config.workers > 1)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Accepted(self.ctx, direction), sock=sock)
        self._servers.append(server)
        return int(sock.getsockname()[1])

    def _install(self, tables: Tables) -> None:
        if self.ctx.policy is not None:  # before the tables: no request sees new tables with
            self.ctx.policy.install(tables)  # the old policies
        self.ctx.install(tables)
        if self.ctx.mtls is not None:
            self.ctx.mtls.identity.set_tables(tables)
        self._first.set()

    def _pod_deleted(self) -> None:
        log.warning("pod %s is gone from the control plane: draining", self.config.pod_key)
        self.deleted = True
        self.request_drain()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            self.ctx.pool.sweep()
            if (h2pool := self.ctx.h2pool_if_made) is not None:
                h2pool.sweep()
            if self.ctx.mtls is not None:
                self.ctx.mtls.sweep()

    # -- state ---------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Serving: a snapshot arrived, listeners are bound, not draining, and — with mTLS — a
        valid certificate is held (ready without one would refuse meshed peers until it came)."""
        mesh = self.ctx.mtls
        has_identity = mesh is None or mesh.identity.material is not None
        return (
            self.ctx.tables is not None
            and bool(self._servers)
            and not self.ctx.draining
            and has_identity
        )

    async def wait_ready(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._first.wait()

    def config_dump(self) -> dict[str, Any]:
        dump = self.ctx.config_dump()
        dump["watch"] = {"version": self._watcher.version, "errors": self._watcher.errors}
        dump["listeners"] = {OUTBOUND: self.outbound_port, INBOUND: self.inbound_port}
        dump["pid"] = os.getpid()
        mesh = self.ctx.mtls
        dump["identity"] = mesh.identity.describe() if mesh is not None else None
        policy = self.ctx.policy
        dump["authz"] = policy.describe() if policy is not None else None
        return dump

    # -- drain ---------------------------------------------------------------------------------
    def request_drain(self) -> None:
        """Start draining (idempotent); :meth:`wait_stopped` returns when it is done."""
        if self._draining is None:
            self._draining = self.ctx.tasks.spawn(self.drain(), name="hm-proxy-drain")

    async def drain(self) -> None:
        ctx = self.ctx
        ctx.draining = True
        for server in self._servers:
            server.close()
        for conn in list(ctx.connections):
            conn.close_when_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_grace_s
        while ctx.connections and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(ctx.connections):
            conn.abort()
        for task in (self._watch, self._upkeep):
            if task is not None:
                task.cancel()
        ctx.pool.close()
        if (h2pool := ctx.h2pool_if_made) is not None:
            h2pool.close()
        if ctx.mtls is not None:
            ctx.mtls.close()
            await ctx.mtls.identity.close()
        await self._client.close()
        ctx.access_log.close(timeout=1.0)
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def close(self) -> None:
        """Drain (if not yet) and wait for it; for tests and embedding."""
        self.request_drain()
        await self._stopped.wait()
        with contextlib.suppress(Exception):
            for server in self._servers:
                await server.wait_closed()
