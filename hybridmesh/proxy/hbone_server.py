"""HBONE for the sidecar engine, the server half: CONNECT streams on 15008 become inbound
connections whose peer is the tunnel's verified identity.

A proxy with an identity listens on the tunnel port (15008, which capture exempts). Each TLS
connection must present a client SVID of our trust domain (``tunnels.serve_tls``: TLS 1.3,
ALPN ``h2``, the SPIFFE ID re-validated); every stream on it is judged as *that* identity,
never as anything the stream says. A ``CONNECT <ip>:<port>`` may name:

- this pod's own address: an inbound connection to the app, as if it had arrived on 15006
  over mTLS from that identity (``InboundRoute.authenticated``): the pod's policies, identity
  headers and metrics see the real caller;
- the cluster IP of the Service this pod is the waypoint of (hbone_waypoint.py);
- anything else: ``404 not-local`` (no open relay).

The stream is answered ``200`` and bridged to one end of a socketpair whose other end is fed
to the engine's usual path: protocol detection, then the HTTP/1, HTTP/2 or opaque session
(:class:`StreamAccepted`, the listener's ``Accepted`` with a route fixed in advance). An
opaque connection is authorized at L4 before it reaches anything (a declared ``tcp`` port
before the ``200``: ``403 policy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any, Final

from hybridmesh.agent.nodeproxy._tunnelio import TunnelConn
from hybridmesh.agent.nodeproxy.tunnel import (
    TunnelRequestError,
    answer,
    parse_authority,
    refuse,
)
from hybridmesh.agent.nodeproxy.tunnels import serve_tls
from hybridmesh.proxy.hbone import bridged_pair
from hybridmesh.proxy.hbone_waypoint import WaypointAuthz, WaypointRoute, served_service
from hybridmesh.proxy.inbound import InboundRoute
from hybridmesh.proxy.listener import Accepted
from hybridmesh.proxy.peer_identity import VerifiedPeer
from hybridmesh.proxy.plan import ConnRoute
from hybridmesh.proxy.policy_hook import authorize_connection
from hybridmesh.proxy.protocols.detect import Protocol
from hybridmesh.proxy.protocols.http2 import H2Server, RequestHeaders

if TYPE_CHECKING:
    from hybridmesh.proxy.context import ProxyContext
    from hybridmesh.proxy.discovery import Tables

__all__ = ["HBONE", "HboneServer", "StreamAccepted", "route_for"]

log = logging.getLogger(__name__)

HBONE: Final = "hbone"
"""The direction of stream connections (not ``inbound``: the mTLS gate already ran)."""
_REPORTER: Final = "destination"
_HTTP: Final = (Protocol.HTTP1, Protocol.HTTP2)


def route_for(ctx: ProxyContext, tables: Tables, authority: bytes, verified: VerifiedPeer,
              waypoint: WaypointAuthz) -> ConnRoute:
    """Where one CONNECT leads, or :class:`TunnelRequestError` (400 / 404)."""
    ip, port = parse_authority(authority)
    if ip == tables.pod.ip:
        route = InboundRoute(ctx, tables, (ip, port), "")
        route.authenticated(verified)
        return route
    served = served_service(tables)
    sp = tables.by_vip.get((ip, port))
    if served is not None and sp is not None and sp.service == served:
        authz = waypoint.current(tables, served)
        return WaypointRoute(ctx, tables, sp, (ip, port), verified=verified, authz=authz)
    raise TunnelRequestError("not-local", f"{ip}:{port} is neither this pod nor a Service "
                             "it is the waypoint of")


def l4_allowed(ctx: ProxyContext, route: ConnRoute) -> bool:
    """An opaque connection's L4 authorization (the caller is the tunnel's identity)."""
    if isinstance(route, WaypointRoute):
        return route.allows_tcp()
    assert isinstance(route, InboundRoute) and route.verified is not None
    return authorize_connection(ctx, route.verified.peer, route.port)


class StreamAccepted(Accepted):
    """The engine's accepted-connection path for one bridged stream: the route is known."""

    def __init__(self, ctx: ProxyContext, route: ConnRoute, remote: str) -> None:
        super().__init__(ctx, HBONE)
        self._given = route
        self._peer_name = remote

    def _route(self, transport: asyncio.BaseTransport) -> ConnRoute | None:
        self._remote = self._peer_name
        return None if self.ctx.draining else self._given

    def _handoff(self, protocol: Protocol, buffered: bytes, *, eof: bool) -> None:
        route, transport = self.route, self.transport
        assert route is not None and transport is not None
        if (route.opaque or protocol not in _HTTP) and not l4_allowed(self.ctx, route):
            self.ctx.connections.discard(self)
            transport.abort()
            return
        super()._handoff(protocol, buffered, eof=eof)


class HboneServer(asyncio.AbstractServer):
    """The 15008 listener of one worker and the tunnel connections it accepted."""

    def __init__(self, ctx: ProxyContext, sock: socket.socket) -> None:
        self._ctx = ctx
        self._sock = sock
        self._conns: dict[TunnelConn, VerifiedPeer] = {}
        self._waypoint = WaypointAuthz(ctx)
        self._closed = asyncio.Event()
        self._accepting = ctx.tasks.spawn(self._accept(), name="hm-hbone-accept")
        self.streams = 0

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    # -- connections ------------------------------------------------------------------------
    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                sock, _ = await loop.sock_accept(self._sock)
                self._ctx.tasks.spawn(self._serve(sock), name="hm-hbone-tls")
        except OSError as exc:
            if not self._closed.is_set():
                log.error("HBONE listener failed: %s", exc)

    async def _serve(self, sock: socket.socket) -> None:
        mesh = self._ctx.mtls
        material = mesh.identity.material if mesh is not None else None
        if mesh is None or material is None or self._ctx.draining:
            sock.close()
            if mesh is not None:
                mesh.metrics.refuse(_REPORTER, "no-identity")
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local = material.svid.identity

        def ready(conn: TunnelConn) -> None:
            assert conn.peer is not None and conn.transport is not None
            leaf = conn.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
            self._conns[conn] = VerifiedPeer.from_der(conn.peer, local, leaf or b"")
            mesh.metrics.admit(_REPORTER, "mutual_tls", str(conn.peer), str(local))

        def closed(conn: TunnelConn) -> None:
            self._conns.pop(conn, None)

        await serve_tls(sock, material.server, on_request=self._request, on_ready=ready,
                        on_closed=closed,
                        on_refused=lambda why: mesh.metrics.refuse(_REPORTER, why))

    # -- streams ------------------------------------------------------------------------------
    def _request(self, conn: TunnelConn, ev: RequestHeaders) -> None:
        assert isinstance(conn.h2, H2Server)
        verified, tables = self._conns.get(conn), self._ctx.tables
        try:
            if self._ctx.draining or tables is None or verified is None:
                raise TunnelRequestError("draining", "proxy is not serving")
            if ev.method != b"CONNECT":
                raise TunnelRequestError("bad-request", "only CONNECT is served on 15008")
            route = route_for(self._ctx, tables, ev.authority, verified, self._waypoint)
            if route.opaque and not l4_allowed(self._ctx, route):
                raise TunnelRequestError("policy", "L4 policy denies the caller")
        except TunnelRequestError as exc:
            log.info("HBONE stream from %s refused: %s", conn.peer, exc)
            refuse(conn.h2, ev.stream_id, exc.reason)
            return
        self._ctx.tasks.spawn(self._bridge(conn, ev.stream_id, route, str(conn.peer)),
                              name="hm-hbone-stream")

    async def _bridge(self, conn: TunnelConn, sid: int, route: ConnRoute, remote: str) -> None:
        assert isinstance(conn.h2, H2Server)
        try:
            near, held = await bridged_pair()
        except OSError:
            refuse(conn.h2, sid, "connect-failed")
            conn.flush()
            return
        if conn.lost:
            near.close()
            if held.transport is not None:
                held.transport.abort()
            return
        held.join(conn, sid)
        answer(conn.h2, sid)
        conn.flush()
        self.streams += 1
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: StreamAccepted(self._ctx, route, remote),
                                           near)

    # -- asyncio.AbstractServer -------------------------------------------------------------
    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._accepting.cancel()
        self._sock.close()
        for conn in list(self._conns):
            with contextlib.suppress(RuntimeError):
                conn.drain()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def is_serving(self) -> bool:
        return not self._closed.is_set()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async def start_serving(self) -> None:
        return None  # serving from construction

    async def serve_forever(self) -> None:
        await self._closed.wait()

    def describe(self) -> dict[str, Any]:
        return {"port": self.port, "tunnels": len(self._conns), "streams": self.streams}
