"""A client connection speaking HTTP/2 (prior knowledge: gRPC, h2c, or a peer proxy's upgrade).

The guarded sans-IO core (``protocols/http2.py``) turns bytes into stream events; every
request stream becomes an :class:`~hybridmesh.proxy.exchange.Exchange` whose
:class:`~hybridmesh.proxy.streams.Downstream` is an :class:`H2Stream`. Requests are converted
to HTTP/1-shaped events (the engine's lingua franca) and back, so routing, balancing,
retries, timeouts and telemetry are the same code for both protocols.

Abuse (rapid reset, CONTINUATION flood, ...) or a protocol violation ends the connection after
the GOAWAY the core queued; the reason is counted in ``proxy_errors_total``. Drain sends a
graceful GOAWAY: streams in flight finish, new ones are refused (the client retries them).

A client that goes away ends its streams: its RST_STREAM cancels that stream upstream, its
EOF (h2load stopping mid-call, a dying gRPC client) or a lost connection cancels every stream
in flight, and after its GOAWAY the connection closes once the last stream ended. Nothing else
would end those connections: reading stopped at the EOF, and an idle one writes nothing that
could fail.
"""

from __future__ import annotations

import asyncio

from hybridmesh.proxy.context import ProxyContext
from hybridmesh.proxy.errors import HEADER, ProxyError, Reason, render_body
from hybridmesh.proxy.exchange import Exchange
from hybridmesh.proxy.h2upstream import h2_fields
from hybridmesh.proxy.plan import ConnRoute
from hybridmesh.proxy.protocols.http1 import (
    END_OF_MESSAGE,
    EndOfMessage,
    Headers,
    InformationalResponse,
    RemoteProtocolError,
    Request,
    Response,
)
from hybridmesh.proxy.protocols.http2 import (
    ConnectionAbuse,
    ConnectionTerminated,
    Data,
    H2ErrorCode,
    H2Server,
    LocalProtocolError,
    ProtocolViolation,
    RequestHeaders,
    StreamReset,
    Trailers,
    WindowOpened,
    h2_request_to_h1,
)

__all__ = ["H2Session", "H2Stream"]


class H2Stream:
    """One request stream: the Downstream of its exchange."""

    protocol = "http2"

    def __init__(self, session: H2Session, sid: int) -> None:
        self.session = session
        self.sid = sid
        self.ctx = session.ctx
        self.route = session.route
        self.remote = session.remote
        self.write_paused = False
        self.exchange: Exchange | None = None
        self.reset = False
        self._read_paused = 0
        self._unacked = 0
        self._held = b""  # the last body chunk, sent with END_STREAM if the end follows

    @property
    def lost(self) -> bool:
        return self.reset or self.session.lost

    # -- request body flow control (acknowledge only what went upstream) ------------------
    def received(self, n: int) -> None:
        if self._read_paused:
            self._unacked += n
        else:
            self.session.conn.acknowledge_received(self.sid, n)

    def pause_reading(self, reason: int, paused: bool) -> None:
        self._read_paused = self._read_paused | reason if paused else self._read_paused & ~reason
        if not self._read_paused and self._unacked:
            n, self._unacked = self._unacked, 0
            self.session.conn.acknowledge_received(self.sid, n)
            self.session.flush_soon()

    # -- Downstream: the response, as HTTP/2 frames ------------------------------------------
    def send_informational(self, event: InformationalResponse) -> None:
        if event.status != 101:
            self.session.conn.send_informational(self.sid, event.status,
                                                 h2_fields(event.headers))

    def send_head(self, request: Request, response: Response, keep_alive: bool) -> bool:
        self.session.conn.send_response(self.sid, response.status, h2_fields(response.headers))
        return True

    def send_body(self, data: bytes) -> None:
        """Held until the end or the session's flush, whichever comes first: a body read
        whole with its end then leaves as one DATA frame carrying END_STREAM, not two."""
        if not data:
            return
        if self._held:
            self.send_held()
        self._held = data
        self.session.hold(self)

    def send_held(self) -> None:
        """Send the held chunk (the session flushes, or another chunk follows)."""
        data, self._held = self._held, b""
        if data and self.session.conn.send_data(self.sid, data) and self.exchange is not None:
            self.write_paused = True  # beyond the client's window: stop reading upstream
            self.exchange.client_writable(False)

    def send_end(self, trailers: Headers) -> None:
        fields = h2_fields(trailers)
        if fields:
            self.send_held()
            self.session.conn.send_trailers(self.sid, fields)
        else:  # complete: a queued remainder needs no pause, nothing more is read for it
            data, self._held = self._held, b""
            self.session.conn.send_data(self.sid, data, end_stream=True)

    def send_error(self, err: ProxyError, keep_alive: bool) -> None:
        body = render_body(err, self.ctx.proxy_name)
        self.session.conn.send_response(self.sid, err.code, [
            (HEADER, err.reason.value.encode("ascii")),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ])
        self.session.conn.send_data(self.sid, body, end_stream=True)

    def flush(self) -> None:
        self.session.flush_soon()

    def exchange_done(self, keep_alive: bool) -> None:
        self.session.stream_done(self.sid)

    def abort(self) -> None:
        self._held = b""
        self.session.conn.reset(self.sid, H2ErrorCode.INTERNAL_ERROR)
        self.session.stream_done(self.sid)
        self.session.flush_soon()

    def window_opened(self) -> None:
        if self.write_paused and self.exchange is not None:
            self.write_paused = False
            self.exchange.client_writable(True)


class H2Session(asyncio.Protocol):
    """One HTTP/2 client connection (see the module docstring)."""

    def __init__(self, ctx: ProxyContext, route: ConnRoute, transport: asyncio.Transport,
                 remote: str) -> None:
        self.ctx = ctx
        self.route = route
        self.transport = transport
        self.remote = remote
        self.conn = H2Server()
        self.streams: dict[int, H2Stream] = {}
        self.lost = False
        self.draining = False
        self._starting: list[Exchange] = []  # requests read in this data_received call
        self._flush_pending = False
        self._held: dict[H2Stream, None] = {}  # streams holding a body chunk, in order

    # -- lifecycle (Closable) -----------------------------------------------------------------
    def start(self, buffered: bytes, eof: bool) -> None:
        if self.transport.get_extra_info("ssl_object") is not None:
            self.conn.trust_peer()  # a mesh proxy that proved its identity (mtls_server.py)
        self.transport.set_protocol(self)
        self.ctx.connections.add(self)
        self.flush()
        if buffered:
            self.data_received(buffered)
        if eof:
            self.eof_received()

    @property
    def busy(self) -> bool:
        return bool(self.streams)

    def close_when_idle(self) -> None:
        """Graceful GOAWAY: in-flight streams finish, the connection closes after them."""
        self.draining = True
        self.conn.goaway()
        self.flush()
        self._close_if_done()

    def abort(self) -> None:
        self.transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        broken = self._events(data)
        starting, self._starting = self._starting, []
        if broken:
            return  # the connection is closing: start nothing
        for exchange in starting:  # after the whole read: DATA that came with a head goes
            exchange.start()       # upstream with it
        self.flush()
        self._close_if_done()  # the read may have reset the last stream, or said GOAWAY

    def _events(self, data: bytes) -> bool:
        """Dispatch the events of one read; True when the connection broke (abuse, protocol
        violation) and is closing."""
        for ev in self.conn.receive_data(data):
            kind = type(ev)
            if kind is Data:
                self._data(ev)  # type: ignore[arg-type]
            elif kind is RequestHeaders:
                self._request(ev)  # type: ignore[arg-type]
            elif kind is Trailers:
                self._end(ev.stream_id, EndOfMessage(ev.headers))  # type: ignore[union-attr]
            elif kind is StreamReset:
                self._reset(ev.stream_id)  # type: ignore[union-attr]
            elif kind is WindowOpened:
                stream = self.streams.get(ev.stream_id)  # type: ignore[union-attr]
                if stream is not None:
                    stream.window_opened()
            elif kind is ConnectionTerminated:
                self.draining = True
            elif kind in (ConnectionAbuse, ProtocolViolation):
                self._broken(ev)  # type: ignore[arg-type]
                return True
        return False

    def eof_received(self) -> bool:
        """The client closed its side: the connection ends now (False), and every stream in
        flight is cancelled upstream (connection_lost). HTTP/2 has no half-close: a client
        that cannot send any more cannot open flow-control windows, acknowledge SETTINGS or
        answer PINGs, and one that went away mid-call (h2load stopping, a gRPC deadline in
        a dying process) would otherwise hold its upstream streams, and this session, until
        the upstream answered, if ever (Envoy, nginx and Go's server end it the same way)."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.ctx.connections.discard(self)
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if stream.exchange is not None:
                stream.exchange.client_gone()

    def pause_writing(self) -> None:
        for stream in self.streams.values():
            if stream.exchange is not None:
                stream.exchange.client_writable(False)

    def resume_writing(self) -> None:
        for stream in self.streams.values():
            if stream.exchange is not None and not stream.write_paused:
                stream.exchange.client_writable(True)

    # -- streams -------------------------------------------------------------------------------
    def _request(self, ev: RequestHeaders) -> None:
        stream = self.streams[ev.stream_id] = H2Stream(self, ev.stream_id)
        try:
            request = h2_request_to_h1(ev)
        except RemoteProtocolError as exc:
            stream.send_error(ProxyError(Reason.BAD_REQUEST, self.route.destination, str(exc)),
                              False)
            self.stream_done(ev.stream_id)
            return
        exchange = stream.exchange = Exchange(stream, request)
        if ev.end_stream:
            exchange.request_end(END_OF_MESSAGE)
        self._starting.append(exchange)

    def _data(self, ev: Data) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is None or stream.exchange is None:
            self.conn.acknowledge_received(ev.stream_id, ev.flow_controlled_length)
            return
        if ev.data:
            stream.exchange.request_body(ev.data)
        stream.received(ev.flow_controlled_length)
        if ev.end_stream:
            stream.exchange.request_end(END_OF_MESSAGE)

    def _end(self, sid: int, end: EndOfMessage) -> None:
        stream = self.streams.get(sid)
        if stream is not None and stream.exchange is not None:
            stream.exchange.request_end(end)

    def _reset(self, sid: int) -> None:
        stream = self.streams.pop(sid, None)
        if stream is not None:
            stream.reset = True
            if stream.exchange is not None:
                stream.exchange.client_gone()

    def _broken(self, ev: ConnectionAbuse | ProtocolViolation) -> None:
        reason = ev.kind.value if isinstance(ev, ConnectionAbuse) else "h2-protocol-violation"
        self.ctx.metrics.proxy_error(reason)
        self.flush()
        self.transport.close()

    def stream_done(self, sid: int) -> None:
        self.streams.pop(sid, None)
        self._close_if_done()

    def _close_if_done(self) -> None:
        """Close a draining connection (our GOAWAY, the client's, or its EOF) once no stream
        is left: what is queued for the client goes out first."""
        if self.draining and not self.streams and not self.lost \
                and not self.transport.is_closing():
            self.flush()
            self.transport.close()

    def flush_soon(self) -> None:
        """Coalesce the frames of every stream answered in this loop iteration (the
        responses one upstream read completes, acknowledgements) into one write: a write is
        a syscall, and on mTLS a TLS record too."""
        if not self._flush_pending and not self.lost:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def hold(self, stream: H2Stream) -> None:
        """``stream`` holds a chunk: it leaves with the stream's end, or at the latest with
        this iteration's flush."""
        self._held[stream] = None
        self.flush_soon()

    def flush(self) -> None:
        self._flush_pending = False
        if self.lost or self.transport.is_closing():
            return
        if self._held:
            held, self._held = self._held, {}
            for stream in held:
                stream.send_held()
        try:
            data = self.conn.data_to_send()
        except LocalProtocolError:  # pragma: no cover - the core's own bug; do not loop
            self.transport.abort()
            return
        if data:
            self.transport.write(data)
