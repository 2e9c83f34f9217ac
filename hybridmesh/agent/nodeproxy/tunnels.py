"""Tunnel connections: dialled per (source identity, destination node), accepted on 15008.

Client side (:class:`TunnelPool`): one mTLS HTTP/2 connection per (source workload identity,
destination node), presenting that workload's SVID; concurrent first uses share one dial; a
connection that is full, lost or told GOAWAY is replaced. The destination must prove it is a
node proxy of the destination node: its certificate must be one of the identities that node
hosts (a node proxy can only obtain its own pods' SVIDs: ``credentials``).

Server side (:func:`accept_tls`): TLS 1.3 with a held SVID's context (client certificate
required), then the client's SPIFFE ID is re-validated and becomes the connection's verified
``peer``, the identity every stream on it is authorized as.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Final

from hybridmesh._aio import TaskSet
from hybridmesh.agent.nodeproxy._tunnelio import TunnelConn
from hybridmesh.agent.nodeproxy.tunnel import TUNNEL_LIMITS, Addr
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.tls import PeerIdentityError, check_peer
from hybridmesh.proxy._tlsread import read_buffered
from hybridmesh.proxy.identity import ALPN_H2, TlsMaterial
from hybridmesh.proxy.protocols.http2 import H2Client, H2Server, RequestHeaders

__all__ = ["HANDSHAKE_TIMEOUT_S", "TunnelDialError", "TunnelPool", "dial", "serve_tls"]

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S: Final = 10.0
PoolKey = tuple[SpiffeId, str]  # (source identity, destination node)


class TunnelDialError(Exception):
    """The tunnel could not be set up: ``reason`` is a stable metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


async def dial(addr: Addr, material: TlsMaterial, expected: frozenset[SpiffeId], sni: str,
               *, mark: int | None = None, timeout: float = HANDSHAKE_TIMEOUT_S,
               on_closed: Callable[[TunnelConn], None] | None = None) -> TunnelConn:
    """A started tunnel connection to ``addr`` whose server is one of ``expected``."""
    loop = asyncio.get_running_loop()
    conn = TunnelConn(H2Client(TUNNEL_LIMITS), on_closed=on_closed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mark is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, addr)
            transport, _ = await loop.create_connection(
                lambda: conn, sock=sock, ssl=material.client_h2, server_hostname=sni,
                ssl_handshake_timeout=timeout)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        sock.close()
        raise TunnelDialError("tunnel-connect", f"{addr[0]}:{addr[1]}: {exc or 'timeout'}") \
            from None
    try:
        ssl_object = transport.get_extra_info("ssl_object")
        peer = check_peer(ssl_object, set(expected))
        if ssl_object.selected_alpn_protocol() != ALPN_H2:
            raise PeerIdentityError("tunnel peer did not negotiate h2")
    except PeerIdentityError as exc:
        transport.abort()
        raise TunnelDialError("tunnel-peer-auth", f"{addr[0]}:{addr[1]}: {exc}") from None
    read_buffered(transport)  # decrypt into a shared buffer, not 256 KiB bytes per read
    conn.start(peer)
    return conn


class TunnelPool:
    """Client tunnel connections by (source identity, destination node)."""

    def __init__(self, tasks: TaskSet, *, mark: int | None = None) -> None:
        self._tasks = tasks
        self._mark = mark
        self._conns: dict[PoolKey, list[TunnelConn]] = {}
        self._dialing: dict[PoolKey, asyncio.Task[TunnelConn]] = {}
        self.dials = 0

    async def get(self, key: PoolKey, addr: Addr, material: TlsMaterial,
                  expected: frozenset[SpiffeId], sni: str) -> TunnelConn:
        """A usable connection for ``key``; :class:`TunnelDialError` if none can be made."""
        for _ in range(3):
            conns = self._conns.get(key, [])
            for conn in conns:
                if conn.usable:
                    return conn
            task = self._dialing.get(key)
            if task is None:
                task = self._tasks.spawn(self._dial(key, addr, material, expected, sni),
                                         name=f"hm-tunnel-dial-{key[1]}")
                self._dialing[key] = task
            conn = await asyncio.shield(task)
            if conn.usable:
                return conn
        raise TunnelDialError("tunnel-unusable", f"no usable tunnel to node {key[1]}")

    async def _dial(self, key: PoolKey, addr: Addr, material: TlsMaterial,
                    expected: frozenset[SpiffeId], sni: str) -> TunnelConn:
        try:
            conn = await dial(addr, material, expected, sni, mark=self._mark,
                              on_closed=lambda c: self._lost(key, c))
            self.dials += 1
            self._conns.setdefault(key, []).append(conn)
            return conn
        finally:
            self._dialing.pop(key, None)

    def _lost(self, key: PoolKey, conn: TunnelConn) -> None:
        conns = self._conns.get(key)
        if conns is not None and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._conns[key]

    @property
    def connections(self) -> int:
        return sum(len(c) for c in self._conns.values())

    def drain(self) -> None:
        """Handover: keep in-flight streams, open no new ones on these connections."""
        for conns in self._conns.values():
            for conn in conns:
                conn.drain()


async def serve_tls(sock: socket.socket, context: ssl.SSLContext, *,
                    on_request: Callable[[TunnelConn, RequestHeaders], None],
                    on_ready: Callable[[TunnelConn], None],
                    on_closed: Callable[[TunnelConn], None],
                    on_refused: Callable[[str], None]) -> None:
    """Terminate TLS on an accepted tunnel socket; ``on_ready`` gets the verified connection.

    ``connect_accepted_socket`` (not a listener protocol plus ``start_tls``): the ClientHello
    must reach the TLS layer, never a placeholder protocol that would drop it.
    """
    loop = asyncio.get_running_loop()
    conn = TunnelConn(H2Server(TUNNEL_LIMITS), on_request=on_request, on_closed=on_closed)
    try:
        transport, _ = await loop.connect_accepted_socket(
            lambda: conn, sock, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
    except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
        sock.close()
        log.info("tunnel handshake failed: %s", exc)
        on_refused("handshake")
        return
    try:
        ssl_object = transport.get_extra_info("ssl_object")
        peer = check_peer(ssl_object, None)
        if ssl_object.selected_alpn_protocol() != ALPN_H2:
            raise PeerIdentityError("client did not negotiate h2")
    except PeerIdentityError as exc:
        log.info("tunnel client refused: %s", exc)
        transport.abort()
        on_refused("peer-identity")
        return
    read_buffered(transport)
    conn.start(peer)
    on_ready(conn)
