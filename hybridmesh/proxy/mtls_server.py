"""Mutual TLS, the inbound half: admit or refuse each connection, terminate mesh TLS.

Called by the listener once detection decided (only when this proxy has an identity):

- a TLS ClientHello is terminated with the current SVID's server context, which *requires* a
  client certificate chaining to the trust bundle (TLS 1.3 only, no session tickets); the
  client's SPIFFE ID is then re-validated (``check_peer``) and becomes the connection's
  verified peer: metric principals, identity headers, the policy hook. The negotiated ALPN
  says what the peer proxy speaks inside: ``h2`` → HTTP/2 session, ``http/1.1`` → HTTP/1
  session, anything else (``hm-tcp``) → opaque relay; the outbound proxy already detected
  the protocol, so nothing is sniffed twice;
- plaintext is refused in STRICT mode (the connection is aborted before the app is even
  connected to: the app receives nothing) and admitted in PERMISSIVE mode (no principal);
- with no valid SVID, TLS cannot be terminated: the connection is refused, never relayed.

The handshake runs in the event loop's own SSL protocol (uvloop's, or asyncio's on a plain
loop): the listener already consumed the ClientHello while sniffing, so the protocol object is
created by hand and fed those bytes, instead of ``loop.start_tls`` which would wait for them.

Caveat (PERMISSIVE): every ClientHello is taken for mesh mTLS; an unmeshed client speaking
TLS *to the app itself* is refused rather than passed through (Istio tells the two apart by
ALPN; see docs/proxy.md).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import ssl
from typing import TYPE_CHECKING, Any, Final

import uvloop
import uvloop.loop

from hybridmesh.identity.tls import PeerIdentityError, check_peer
from hybridmesh.proxy._tlsread import read_buffered
from hybridmesh.proxy.h1session import Http1Session
from hybridmesh.proxy.identity import ALPN_H1, ALPN_H2, TlsMaterial
from hybridmesh.proxy.inbound import InboundRoute
from hybridmesh.proxy.peer_identity import VerifiedPeer
from hybridmesh.proxy.policy_hook import authorize_connection
from hybridmesh.proxy.protocols.detect import Protocol
from hybridmesh.proxy.tcpproxy import TcpSession
from hybridmesh.telemetry.proxy_metrics import UNKNOWN

if TYPE_CHECKING:
    from hybridmesh.proxy.context import ProxyContext
    from hybridmesh.proxy.mtls import MeshTls

__all__ = ["HANDSHAKE_TIMEOUT_S", "inbound_gate"]

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S: Final = 10.0
_REPORTER: Final = "destination"


def inbound_gate(ctx: ProxyContext, route: InboundRoute, transport: asyncio.Transport,
                 protocol: Protocol, buffered: bytes, *, remote: str) -> Protocol | None:
    """What a detected inbound connection becomes: the plaintext protocol to continue with,
    or None when this module took it over (TLS) or refused it (closed). Only called when
    ``ctx.mtls`` is set."""
    mesh = ctx.mtls
    assert mesh is not None
    tables = ctx.tables
    if protocol is Protocol.TLS:
        material = mesh.identity.material
        if material is None:
            _refuse(mesh, transport, "no-identity", remote)
            return None
        _terminate(ctx, route, transport, buffered, remote=remote, material=material)
        return None
    if tables is not None and mesh.strict(tables):
        _refuse(mesh, transport, "plaintext-strict", remote)
        return None
    local = mesh.identity.identity
    mesh.metrics.admit(_REPORTER, "none", UNKNOWN, str(local) if local else UNKNOWN)
    if route.opaque or protocol is Protocol.OPAQUE:
        if not authorize_connection(ctx, None, route.port):
            _refuse(mesh, transport, "policy", remote)
            return None
        return Protocol.OPAQUE
    return protocol


def _refuse(mesh: MeshTls, transport: asyncio.Transport, reason: str, remote: str) -> None:
    mesh.metrics.refuse(_REPORTER, reason)
    log.debug("inbound from %s refused: %s", remote, reason)
    transport.abort()


def _ssl_protocol(loop: asyncio.AbstractEventLoop) -> Any:
    """The loop's own SSL protocol class (uvloop's C one when the loop is uvloop)."""
    if isinstance(loop, uvloop.Loop):
        return uvloop.loop.SSLProtocol  # type: ignore[attr-defined]
    return asyncio.sslproto.SSLProtocol


def _terminate(ctx: ProxyContext, route: InboundRoute, transport: asyncio.Transport,
               buffered: bytes, *, remote: str, material: TlsMaterial) -> None:
    mesh = ctx.mtls
    assert mesh is not None
    loop = asyncio.get_running_loop()
    app = _Verifying(ctx, mesh, route, remote, material)
    waiter = loop.create_future()
    waiter.add_done_callback(app.handshake_done)
    tls = _ssl_protocol(loop)(loop, app, material.server, waiter, server_side=True,
                              ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
    app.tls_transport = transport
    ctx.connections.add(app)
    transport.set_protocol(tls)
    tls.connection_made(transport)
    _feed(tls, buffered)


def _feed(tls: Any, data: bytes) -> None:
    """Give the SSL protocol the bytes detection already read (it is a BufferedProtocol)."""
    view = memoryview(data)
    while view:
        buf = tls.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        tls.buffer_updated(n)
        view = view[n:]


class _Verifying(asyncio.Protocol):
    """The app protocol during the handshake: checks the client's identity, then hands the
    decrypted stream to the session ALPN names. Closable while it waits (drain aborts it)."""

    def __init__(self, ctx: ProxyContext, mesh: MeshTls, route: InboundRoute, remote: str,
                 material: TlsMaterial) -> None:
        self.ctx, self.mesh, self.route, self.remote = ctx, mesh, route, remote
        self.material = material
        self.tls_transport: asyncio.Transport | None = None

    # -- Closable -------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return False

    def close_when_idle(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self.tls_transport is not None:
            self.tls_transport.abort()

    # -- handshake outcome ----------------------------------------------------------------------
    def handshake_done(self, waiter: asyncio.Future[Any]) -> None:
        self.ctx.connections.discard(self)
        exc = None if waiter.cancelled() else waiter.exception()
        if exc is not None or waiter.cancelled():
            self.mesh.metrics.refuse(_REPORTER, "handshake")
            log.debug("inbound mTLS handshake from %s failed: %s", self.remote, exc)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tls: asyncio.Transport = transport  # type: ignore[assignment]
        self.ctx.connections.discard(self)
        verified = self._verify(tls)
        if verified is None:
            tls.abort()
            return
        route = self.route
        route.authenticated(verified)
        self.mesh.metrics.admit(_REPORTER, "mutual_tls", str(verified.peer), str(verified.local))
        alpn = tls.get_extra_info("ssl_object").selected_alpn_protocol()
        if alpn == ALPN_H2 and not route.opaque:
            from hybridmesh.proxy.h2session import H2Session  # h2: imported at first use

            H2Session(self.ctx, route, tls, self.remote).start(b"", False)
        elif alpn == ALPN_H1 and not route.opaque:
            Http1Session(self.ctx, route, tls, self.remote).start(b"", False)
        elif authorize_connection(self.ctx, verified.peer, route.port):
            TcpSession(self.ctx, route).start(tls, b"", False)
        else:
            self.mesh.metrics.refuse(_REPORTER, "policy")
            tls.abort()
            return
        read_buffered(tls)  # the session set itself on tls: no 256 KiB bytes per read

    def _verify(self, tls: asyncio.Transport) -> VerifiedPeer | None:
        ssl_object: ssl.SSLObject = tls.get_extra_info("ssl_object")
        try:
            peer = check_peer(ssl_object, None)
        except PeerIdentityError as exc:
            self.mesh.metrics.refuse(_REPORTER, "peer-identity")
            log.warning("inbound mTLS from %s: %s", self.remote, exc.reason)
            return None
        leaf = ssl_object.getpeercert(binary_form=True) or b""
        return VerifiedPeer.from_der(peer, self.material.svid.identity, leaf)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - handed over at once
        raise AssertionError("data before the handover")

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.connections.discard(self)
