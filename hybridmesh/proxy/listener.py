"""Accepting a captured connection: original destination, route, protocol detection, handoff.

Every connection the outbound (15001) and inbound (15006) listeners accept starts as an
:class:`Accepted` protocol. It reads ``SO_ORIGINAL_DST`` (where the app meant to go: iptables'
conntrack answers it, or eBPF capture's ``cgroup/getsockopt`` program; an inbound connection
steered by ``sk_lookup`` has none and keeps its destination as its local address), builds the
connection's route (outbound.py / inbound.py) from the current tables, then decides the protocol:

- ports declared ``appProtocol: tcp|opaque`` skip detection and relay at once;
- otherwise the first bytes are sniffed (``protocols/detect.py``) for at most the detection
  window (default 20 ms). A client that stays silent — a server-speaks-first protocol such as
  SMTP or MySQL — is relayed as opaque TCP when the window ends, so its banner is only that
  window late (Istio's default window is 100 ms+, and it documents the stall). Inbound, where
  the destination is fixed, the proxy connects to the app during detection, and an app that
  speaks first ends detection at once (preconnect.py). So inbound the window ends nothing
  while that app connection is up and silent: the app's first byte decides "opaque", the
  client's first bytes decide their protocol, however late they come — a client proxy that a
  loaded machine keeps off the CPU for longer than the window (or that dialled ahead of its
  first request) must not turn a meshed HTTP connection into opaque TCP, which would carry it
  past the L7 policy and the request metrics for its whole life. With STRICT mTLS there is no
  app connection before the peer is verified, and the peer (always a proxy) speaks TLS first:
  the window is :data:`STRICT_WINDOW_S` there;
- HTTP/1 goes to :class:`~hybridmesh.proxy.h1session.Http1Session`, HTTP/2 prior knowledge
  (gRPC, h2c, a peer proxy's upgrade) to :class:`~hybridmesh.proxy.h2session.H2Session`;
  TLS and anything else are relayed opaquely.

The transport is handed over with ``transport.set_protocol`` and the bytes already read.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sys
import termios

from hybridmesh.proxy._sockopt import tune_stream
from hybridmesh.proxy.context import ProxyContext
from hybridmesh.proxy.h1session import Http1Session
from hybridmesh.proxy.inbound import InboundRoute
from hybridmesh.proxy.outbound import OutboundRoute
from hybridmesh.proxy.plan import ConnRoute
from hybridmesh.proxy.preconnect import Preconnect
from hybridmesh.proxy.protocols.detect import Detection, Detector, Protocol
from hybridmesh.proxy.tcpproxy import TcpSession
from hybridmesh.proxy.upstream import ConnectFailed, connect

__all__ = ["INBOUND", "OUTBOUND", "Accepted"]

log = logging.getLogger(__name__)

OUTBOUND = "outbound"
INBOUND = "inbound"
_MAX_EXTENSIONS = 50  # of 1 ms each, only while bytes sit unread in the socket
STRICT_WINDOW_S = 10.0
"""Inbound STRICT: how long a silent client may wait before it is refused (Linkerd: 10 s)."""


def _unread(transport: asyncio.BaseTransport | None) -> bool:
    """Bytes waiting in the socket's receive queue (FIONREAD): the client has spoken."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    try:
        got = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return False
    return int.from_bytes(got, sys.byteorder) > 0


def _steered_dst(transport: asyncio.BaseTransport) -> tuple[str, int] | None:
    """Inbound without a NAT record: eBPF capture (``sk_lookup``, the ``sidecar+ebpf``
    placement) hands the connection to the listener unchanged, so the address the client
    dialled is the socket's own. A direct dial of the listener names the listener's port,
    which the loop check in ``_route`` refuses."""
    local = transport.get_extra_info("sockname")
    if isinstance(local, tuple) and len(local) >= 2:
        return str(local[0]), int(local[1])
    return None


class Accepted(asyncio.Protocol):
    """A connection whose protocol is not decided yet."""

    def __init__(self, ctx: ProxyContext, direction: str) -> None:
        self.ctx = ctx
        self.direction = direction
        self.transport: asyncio.Transport | None = None
        self.route: ConnRoute | None = None
        self.detector: Detector | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._remote = ""
        self._pre: Preconnect | None = None
        self._pre_task: asyncio.Task[None] | None = None
        self._extensions = 0
        self._window_over = False  # the window ended while an app connection was pending

    # -- Closable ------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return False

    def close_when_idle(self) -> None:
        self.abort()

    def abort(self) -> None:
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        route = self._route(transport)
        if route is None:
            transport.abort()  # type: ignore[attr-defined]
            return
        self.route = route
        self.ctx.connections.add(self)
        mesh = self.ctx.mtls if self.direction == INBOUND else None
        if route.opaque and mesh is None:  # with mTLS, even opaque ports sniff for TLS
            self._handoff(Protocol.OPAQUE, b"", eof=False)
            return
        self.detector = Detector()
        loop = asyncio.get_running_loop()
        tables = self.ctx.tables
        window = self.ctx.config.detect_timeout_s
        if self.direction == INBOUND:
            if mesh and tables and mesh.strict(tables):
                # the app must not even see a connection before the peer is verified
                window = max(window, STRICT_WINDOW_S)
            else:
                self._pre_task = self.ctx.tasks.spawn(self._preconnect(), name="hm-preconnect")
        self._timer = loop.call_later(window, self._window_ended)

    def data_received(self, data: bytes) -> None:
        detector = self.detector
        if detector is None:
            return
        outcome = detector.feed(data)
        if outcome.decided:
            self._decided(outcome, eof=False)

    def eof_received(self) -> bool:
        if self.detector is not None:
            self._decided(self.detector.eof(), eof=True)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.ctx.connections.discard(self)
        if self.detector is not None:  # the client left while we were still sniffing
            self.detector = None
            self._drop_preconnect()

    # -- internals ------------------------------------------------------------------------------
    def _route(self, transport: asyncio.BaseTransport) -> ConnRoute | None:
        ctx, tables = self.ctx, self.ctx.tables
        if tables is None or ctx.draining:
            return None
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        self._remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        orig = ctx.original_dst(sock, self.direction) if sock is not None else None
        if orig is None and self.direction == INBOUND:
            orig = _steered_dst(transport)
        if orig is None or (orig[1] in ctx.config.excluded_inbound_ports and orig[0] in (
            tables.pod.ip, "127.0.0.1", "0.0.0.0"
        )):
            # Not redirected (someone dialled the listener itself), or redirected to us again:
            # following it would loop back into this listener.
            log.debug("%s: refusing %s -> %s (no usable original destination)",
                      self.direction, self._remote, orig)
            return None
        tune_stream(sock)
        if self.direction == OUTBOUND:
            return OutboundRoute(ctx, tables, orig)
        return InboundRoute(ctx, tables, orig, str(peer[0]) if isinstance(peer, tuple) else "")

    async def _preconnect(self) -> None:
        """Inbound only: connect to the app while detecting (see preconnect.py)."""
        route = self.route
        picked = route.pick_tcp(()) if route is not None else None
        if picked is None:
            return
        config = self.ctx.config
        try:
            _, pre = await connect(picked[0], lambda: Preconnect(self._upstream_spoke),
                                   mark=self.ctx.mark, timeout=config.connect_timeout_s)
        except ConnectFailed:
            self._pre_task = None  # before _decided: its hand-off must not cancel this task
            if self.detector is not None and self._window_over:
                self._decided(self.detector.timeout(), eof=False)  # nothing left to wait for
            return
        finally:
            self._pre_task = None
        if self.detector is None:  # decided (or gone) meanwhile without it
            pre.disown()
        else:
            self._pre = pre

    def _upstream_spoke(self) -> None:
        """The app spoke (or closed) before the client said anything: a server-first
        protocol, so opaque now rather than at the end of the window."""
        if self.detector is not None:
            self._decided(self.detector.timeout(), eof=False)

    def _drop_preconnect(self) -> None:
        if self._pre_task is not None:
            self._pre_task.cancel()
            self._pre_task = None
        if self._pre is not None:
            self._pre.disown()
            self._pre = None

    def _window_ended(self) -> None:
        self._timer = None
        if self.detector is None:
            return
        if _unread(self.transport) and self._extensions < _MAX_EXTENSIONS:
            # The client did speak in time, the loop just has not read it yet: libuv runs
            # timers *before* polling for I/O, so after a stall longer than the window (a
            # loaded machine) the timer wins over bytes already queued. They are delivered
            # in this iteration's poll phase; a HTTP client must not become "opaque TCP".
            self._extensions += 1
            self._timer = asyncio.get_running_loop().call_later(0.001, self._window_ended)
            return
        if self._pre_task is not None or (self._pre is not None and self._pre.awaiting_client):
            # inbound, the app is (being) connected and silent: whoever speaks first decides
            # (see the module docstring); a failed app connection decides in _preconnect
            self._window_over = True
            return
        self._decided(self.detector.timeout(), eof=False)

    def _decided(self, outcome: Detection, *, eof: bool) -> None:
        detector, self.detector = self.detector, None
        self._cancel_timer()
        self._handoff(outcome.protocol, detector.buffered if detector else b"", eof=eof)

    def _handoff(self, protocol: Protocol, buffered: bytes, *, eof: bool) -> None:
        transport, route = self.transport, self.route
        assert transport is not None and route is not None
        self.ctx.connections.discard(self)
        mesh = self.ctx.mtls if self.direction == INBOUND else None
        if mesh is not None and isinstance(route, InboundRoute):
            from hybridmesh.proxy.mtls_server import inbound_gate  # mTLS only (cryptography)

            gated = inbound_gate(self.ctx, route, transport, protocol, buffered,
                                 remote=self._remote)
            if gated is None:  # TLS taken over by mtls_server, or refused
                self._drop_preconnect()
                return
            protocol = gated
        pre, self._pre = self._pre, None
        if pre is None or pre.lost:
            self._drop_preconnect()
            pre = None
        if protocol is Protocol.HTTP1:
            if pre is not None and pre.pristine:
                picked = route.pick_tcp(())
                if picked is not None:
                    pre.to_pool(self.ctx.pool, picked[0])
                    pre = None
            if pre is not None:
                pre.disown()
            Http1Session(self.ctx, route, transport, self._remote).start(buffered, eof)
        elif protocol is Protocol.HTTP2 and not route.opaque:
            from hybridmesh.proxy.h2session import H2Session  # h2: imported at first use

            if pre is not None:
                pre.disown()
            H2Session(self.ctx, route, transport, self._remote).start(buffered, eof)
        else:
            TcpSession(self.ctx, route).start(transport, buffered, eof, pre)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
