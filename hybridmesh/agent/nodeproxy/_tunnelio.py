"""The tunnel engine: HTTP/2 CONNECT streams joined to TCP connections, with backpressure.

:class:`TunnelConn` is the asyncio protocol on the TLS connection between two node proxies
(either end: it wraps ``H2Client`` or ``H2Server``). :class:`StreamBridge` is the protocol of
the TCP connection one stream carries (the pod's connection on the source node, the connection
to the destination pod on the other). Bytes are relayed without queues of our own:

- TCP → stream: ``send_data``; if h2 reports bytes queued (the peer's window is full), stop
  reading that TCP socket until ``WindowOpened``; if the TLS transport's buffer is high
  (``pause_writing``), stop reading every TCP socket of the connection;
- stream → TCP: write, then hand the bytes back to the peer's window (``acknowledge_received``)
  unless the TCP socket's buffer is high; then only on ``resume_writing``. A slow reader
  therefore slows its own stream's sender, not the other streams;
- EOF ↔ END_STREAM both ways (half-close works); a reset on either side aborts the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

from hybridmesh.agent.nodeproxy.tunnel import Addr, open_stream, refusal_reason
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.proxy.protocols import http2 as h2p
from hybridmesh.proxy.protocols.errors import LocalProtocolError

__all__ = ["StreamBridge", "TunnelConn"]

log = logging.getLogger(__name__)

OnOpened = Callable[[int, str | None], None]
"""Called with the stream id and None once the destination accepted the CONNECT, else with
the refusal reason."""


class StreamBridge(asyncio.Protocol):
    """One tunnel stream joined to one TCP connection."""

    def __init__(self, conn: TunnelConn, stream_id: int,
                 on_closed: Callable[[StreamBridge], None] | None = None) -> None:
        self.conn = conn
        self.sid = stream_id
        self.transport: asyncio.Transport | None = None
        self.read_bytes = 0  # from the TCP side
        self.written_bytes = 0  # to the TCP side
        self._on_closed = on_closed
        self._unacked = 0
        self._write_paused = False
        self._window_wait = False
        self._tcp_eof = False
        self._stream_eof = False
        self._reset = False
        self._done = False

    # -- joining ------------------------------------------------------------------------------
    def attach(self, transport: asyncio.Transport, buffered: bytes = b"",
               eof: bool = False) -> None:
        """Take over an already accepted (paused) TCP transport and start relaying;
        ``buffered``/``eof``: what its previous protocol already read."""
        transport.set_protocol(self)
        self.connection_made(transport)
        if buffered:
            self.data_received(buffered)
        if eof:
            self.eof_received()
        elif not self._window_wait:
            with contextlib.suppress(RuntimeError):
                transport.resume_reading()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = tcp = cast(asyncio.Transport, transport)  # uvloop: not a subclass
        if self._reset:
            tcp.abort()

    # -- TCP side -----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.read_bytes += len(data)
        if self.conn.send(self.sid, data) > 0 and self.transport is not None:
            self._window_wait = True
            self._pause(True)

    def eof_received(self) -> bool:
        self._tcp_eof = True
        self.conn.send(self.sid, b"", end=True)
        self._maybe_close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not (self._tcp_eof and self._stream_eof) and not self._reset:
            self.conn.reset(self.sid)
        self._finish()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._unacked:
            self.conn.ack(self.sid, self._unacked)
            self._unacked = 0

    # -- stream side (called by TunnelConn) ---------------------------------------------------
    def on_data(self, data: bytes, flow: int, end: bool) -> None:
        t = self.transport
        if t is None or t.is_closing():
            self.conn.ack(self.sid, flow)
        else:
            t.write(data)
            self.written_bytes += len(data)
            if self._write_paused:
                self._unacked += flow
            else:
                self.conn.ack(self.sid, flow)
        if end:
            self.on_end()

    def on_end(self) -> None:
        self._stream_eof = True
        t = self.transport
        if t is not None and not t.is_closing():
            if t.can_write_eof():
                t.write_eof()
            else:
                t.close()
        self._maybe_close()

    def on_window(self) -> None:
        if self._window_wait:
            self._window_wait = False
            if not self.conn.paused:
                self._pause(False)

    def on_reset(self) -> None:
        self._reset = True
        if self.transport is not None:
            self.transport.abort()
        else:
            self._finish()

    def source_paused(self, paused: bool) -> None:
        """The TLS connection's buffer is high (True) or drained (False)."""
        if paused or not self._window_wait:
            self._pause(paused)

    # -- helpers ------------------------------------------------------------------------------
    def _pause(self, paused: bool) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        with contextlib.suppress(RuntimeError):
            if paused:
                t.pause_reading()
            else:
                t.resume_reading()

    def _maybe_close(self) -> None:
        if self._tcp_eof and self._stream_eof and self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self.conn.forget(self.sid)
        if self._on_closed is not None:
            self._on_closed(self)


class TunnelConn(asyncio.Protocol):
    """One mTLS HTTP/2 connection between node proxies (client or server end)."""

    def __init__(self, h2: h2p.H2Client | h2p.H2Server, *,
                 on_request: Callable[[TunnelConn, h2p.RequestHeaders], None] | None = None,
                 on_closed: Callable[[TunnelConn], None] | None = None) -> None:
        self.h2 = h2
        self.transport: asyncio.Transport | None = None
        self.peer: SpiffeId | None = None  # verified identity of the other end
        self.trusted = False  # the h2 engine skips inbound header validation (start)
        self.bridges: dict[int, StreamBridge] = {}
        self.opening: dict[int, OnOpened] = {}
        self.paused = False
        self.goaway = False  # the peer is draining: open no new streams here
        self.lost = False
        self._on_request = on_request
        self._on_closed = on_closed
        self._started = False
        self._early: list[bytes] = []
        self._batch = False
        self._closable = True

    # -- lifecycle ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self, peer: SpiffeId | None) -> None:
        """The peer is verified: send our preface and process what it already sent.

        ``peer`` is the SPIFFE ID ``tunnels.dial``/``serve_tls`` checked after the mTLS
        handshake: the other end holds an SVID, so it is a mesh proxy (node proxy, sidecar or
        waypoint: only proxies hold SVIDs) that checks every head it sends; the HTTP/2 engine
        skips h2's inbound header validation for it (``trust_peer``), as the sidecar does on
        its mTLS connections. Nothing app-facing is an h2 tunnel: a pod's bytes only ever
        arrive as DATA of a stream. Without a verified peer nothing is trusted.
        """
        self.peer = peer
        if peer is not None:
            self.h2.trust_peer()  # before the early bytes: they are the peer's too
            self.trusted = True
        self._started = True
        early, self._early = self._early, []
        for chunk in early:
            self.data_received(chunk)
        self.flush()

    @property
    def usable(self) -> bool:
        """Can a new stream be opened here?"""
        return (self._started and not self.lost and not self.goaway
                and isinstance(self.h2, h2p.H2Client) and self.h2.can_open_stream())

    @property
    def streams(self) -> int:
        return len(self.bridges) + len(self.opening)

    def drain(self, grace_s: float = 2.0) -> None:
        """Handover or shutdown: no new streams here; close once those in flight ended.

        The server end sends GOAWAY(2**31-1): the client stops opening streams, and none it
        already sent is refused. The close waits ``grace_s`` for streams that crossed it.
        """
        if isinstance(self.h2, h2p.H2Server):
            self.h2.goaway(last_stream_id=2**31 - 1)
            self.flush()
        self.goaway = True
        self._closable = False
        asyncio.get_running_loop().call_later(grace_s, self._grace_over)

    def _grace_over(self) -> None:
        self._closable = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self.goaway and self._closable and not self.streams and self.transport is not None:
            self.transport.close()

    # -- opening streams (client end) ---------------------------------------------------------
    def open(self, destination: Addr, source_pod: str, on_opened: OnOpened) -> int:
        assert isinstance(self.h2, h2p.H2Client)
        sid = open_stream(self.h2, destination, source_pod)
        self.opening[sid] = on_opened
        self.flush()
        return sid

    def bridge(self, sid: int, on_closed: Callable[[StreamBridge], None] | None) -> StreamBridge:
        bridge = self.bridges[sid] = StreamBridge(self, sid, on_closed)
        return bridge

    # -- calls from bridges -------------------------------------------------------------------
    def send(self, sid: int, data: bytes, *, end: bool = False) -> int:
        try:
            queued = self.h2.send_data(sid, data, end_stream=end)
        except LocalProtocolError:
            return 0
        self.flush()
        return queued

    def ack(self, sid: int, n: int) -> None:
        with contextlib.suppress(LocalProtocolError):
            self.h2.acknowledge_received(sid, n)
        self.flush()

    def reset(self, sid: int) -> None:
        self.h2.reset(sid)
        self.flush()

    def forget(self, sid: int) -> None:
        self.bridges.pop(sid, None)
        if self.goaway:
            self._close_if_idle()

    def flush(self) -> None:
        if self._batch or not self._started or self.transport is None:
            return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)
        if self.h2.closed:
            self.transport.close()

    # -- the peer's bytes ---------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if not self._started:
            self._early.append(data)
            return
        self._batch = True
        try:
            for event in self.h2.receive_data(data):
                self._dispatch(event)
        finally:
            self._batch = False
        self.flush()

    def _dispatch(self, ev: Any) -> None:
        if isinstance(ev, h2p.Data):
            bridge = self.bridges.get(ev.stream_id)
            if bridge is None:
                self.ack(ev.stream_id, ev.flow_controlled_length)
            else:
                bridge.on_data(ev.data, ev.flow_controlled_length, ev.end_stream)
        elif isinstance(ev, h2p.WindowOpened):
            if (bridge := self.bridges.get(ev.stream_id)) is not None:
                bridge.on_window()
        elif isinstance(ev, h2p.RequestHeaders) and self._on_request is not None:
            self._on_request(self, ev)
        elif isinstance(ev, h2p.ResponseHeaders):
            self._opened(ev)
        elif isinstance(ev, h2p.Trailers):
            if (bridge := self.bridges.get(ev.stream_id)) is not None:
                bridge.on_end()
        elif isinstance(ev, h2p.StreamReset):
            self._stream_reset(ev.stream_id)
        elif isinstance(ev, h2p.ConnectionTerminated):
            self.goaway = True
            self._close_if_idle()
        elif isinstance(ev, h2p.ConnectionAbuse | h2p.ProtocolViolation):
            log.warning("tunnel peer %s: %s", self.peer, ev)

    def _opened(self, ev: h2p.ResponseHeaders) -> None:
        on_opened = self.opening.pop(ev.stream_id, None)
        if on_opened is None:
            return
        reason = refusal_reason(ev)
        on_opened(ev.stream_id, reason)
        if reason is not None:
            self.reset(ev.stream_id)
        elif ev.end_stream and (bridge := self.bridges.get(ev.stream_id)) is not None:
            bridge.on_end()

    def _stream_reset(self, sid: int) -> None:
        on_opened = self.opening.pop(sid, None)
        if on_opened is not None:
            on_opened(sid, "reset")
        bridge = self.bridges.get(sid)
        if bridge is not None:
            bridge.on_reset()

    # -- the TLS transport --------------------------------------------------------------------
    def pause_writing(self) -> None:
        self.paused = True
        for bridge in list(self.bridges.values()):
            bridge.source_paused(True)

    def resume_writing(self) -> None:
        self.paused = False
        for bridge in list(self.bridges.values()):
            bridge.source_paused(False)

    def eof_received(self) -> bool:
        return False  # TLS: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        opening, self.opening = self.opening, {}
        for sid, on_opened in opening.items():
            on_opened(sid, "connection-lost")
        for bridge in list(self.bridges.values()):
            bridge.on_reset()
        if self._on_closed is not None:
            self._on_closed(self)
