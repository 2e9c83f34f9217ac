"""An opaque TCP connection through the proxy: pick an upstream, connect, relay.

Used for everything that is not HTTP/1 (detection said opaque/TLS/HTTP/2, the port is declared
``tcp``/``opaque``, or the client was silent for the detection window). A service destination
is balanced (P2C, connect time as the RTT sample, connect failures feed outlier detection and
try the next endpoint, up to three tries); any other destination is connected to as is. If no
upstream can be reached the client's connection is reset: an opaque protocol has no error
response the proxy could write.
"""

from __future__ import annotations

import asyncio
import logging
import time

from hybridmesh.proxy.context import ProxyContext
from hybridmesh.proxy.plan import ConnRoute
from hybridmesh.proxy.preconnect import Preconnect
from hybridmesh.proxy.relay import Relay
from hybridmesh.proxy.upstream import ConnectFailed, EndpointKey, connect
from hybridmesh.telemetry.proxy_metrics import Peer

__all__ = ["MAX_CONNECT_TRIES", "TcpSession"]

log = logging.getLogger(__name__)

MAX_CONNECT_TRIES = 3


class TcpSession:
    """One relayed connection (see :class:`~hybridmesh.proxy.context.Closable`)."""

    def __init__(self, ctx: ProxyContext, route: ConnRoute) -> None:
        self.ctx = ctx
        self.route = route
        self.relay = Relay(on_closed=self._closed)
        self._peer = Peer.unknown()
        self._opened = False

    @property
    def busy(self) -> bool:
        return True  # a relay is always mid-conversation as far as we can tell

    def close_when_idle(self) -> None:
        return None  # opaque bytes: drain lets them run until the grace period ends

    def abort(self) -> None:
        self.relay.abort()

    def start(self, transport: asyncio.Transport, buffered: bytes, eof: bool,
              pre: Preconnect | None = None) -> None:
        """Take over the client transport; relay to ``pre`` (an upstream connection made
        during detection) or connect upstream in the background."""
        self.relay.start_downstream(transport, buffered)
        if eof:
            self.relay.downstream_eof()
        self.ctx.connections.add(self)
        picked = self.route.pick_tcp(()) if pre is not None else None
        if pre is not None and picked is not None:
            pre.to_relay(self.relay)
            self._opened_to(picked[1])
            return
        self.ctx.tasks.spawn(self._connect(), name="hm-tcp-connect")

    def _opened_to(self, peer: Peer) -> None:
        self._peer = peer
        self._opened = True
        self.ctx.metrics.tcp_open(reporter=self.route.reporter, source=self.route.source,
                                  destination=peer, service=self.route.service)
        self.relay.upstream_connected()

    async def _connect(self) -> None:
        tried: list[EndpointKey] = []
        detail = "no endpoint"
        for _ in range(MAX_CONNECT_TRIES):
            picked = self.route.pick_tcp(tried)
            if picked is None:
                break
            key, peer = picked
            tried.append(key)
            started = time.monotonic()
            try:
                transport, peer = await self._dial(key, peer)
            except ConnectFailed as exc:
                self.route.finish_tcp(key, started, False)
                detail = str(exc)
                if key in tried[:-1]:
                    break  # the picker has nothing new to offer
                continue
            self.route.finish_tcp(key, started, True)
            if self.relay.down.lost:
                transport.abort()
                return
            self._opened_to(peer)
            return
        self.ctx.metrics.proxy_error("connect-refused" if tried else "no-endpoints")
        log.info("tcp %s: giving up (%s)", self.route.destination, detail)
        self.relay.abort()

    async def _dial(self, key: EndpointKey, peer: Peer) -> tuple[asyncio.Transport, Peer]:
        """Plain TCP, or mTLS when a proxy answers at ``key`` (then the peer has its verified
        principal); ConnectFailed either way."""
        mesh = self.ctx.mtls
        dialled = await mesh.dial_tcp(key, lambda: self.relay.up) if mesh is not None else None
        if dialled is not None:
            return dialled[0], dialled[2] or peer
        transport, _ = await connect(key, lambda: self.relay.up, mark=self.ctx.mark,
                                     timeout=self.ctx.config.connect_timeout_s)
        return transport, peer

    def _closed(self, read_bytes: int, write_bytes: int) -> None:
        self.ctx.connections.discard(self)
        if self._opened:
            self.ctx.metrics.tcp_close(
                reporter=self.route.reporter, source=self.route.source, destination=self._peer,
                service=self.route.service, read_bytes=read_bytes, write_bytes=write_bytes,
            )  # fmt: skip
