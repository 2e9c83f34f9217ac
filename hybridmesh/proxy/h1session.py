"""One client connection speaking HTTP/1.1 to the proxy (either direction).

The strict reader (``protocols/http1.py``) sits in front: nothing the client sends reaches an
upstream except as a request the proxy re-serialized canonically, so a framing trick
(CL+TE, obs-fold, bare LF...) dies here with the status the reader chose (400/414/431/505),
and the connection closes. Requests are handled one at a time in order; pipelined requests
wait in the reader's buffer (bounded: reading pauses when too much piles up).

The session is the :class:`~hybridmesh.proxy.streams.Downstream` of its exchanges: it owns
the HTTP/1.1 wire format towards the client (response framing per request and client
version, one write per batch of upstream events).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from hybridmesh.proxy.context import ProxyContext
from hybridmesh.proxy.errors import ProxyError, Reason, render
from hybridmesh.proxy.exchange import Exchange
from hybridmesh.proxy.plan import ConnRoute
from hybridmesh.proxy.protocols.http1 import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Framing,
    Headers,
    InformationalResponse,
    RemoteProtocolError,
    Request,
    RequestReader,
    Response,
    frame_data,
    frame_end,
    response_framing,
    serialize_informational,
    serialize_response,
)
from hybridmesh.proxy.streams import PAUSE_PIPELINE, PAUSE_PREATTACH, PAUSE_UPSTREAM
from hybridmesh.telemetry.proxy_metrics import Peer

__all__ = ["Http1Session"]

_MAX_HELD = 1 << 20  # pipelined bytes buffered behind an in-flight request
_LENGTH = Framing.LENGTH  # module constants: an Enum member lookup is ~5x a global read
_CHUNKED = Framing.CHUNKED


class Http1Session(asyncio.Protocol):
    """Reads requests from one client and runs an :class:`Exchange` per request."""

    protocol = "http1"

    def __init__(
        self, ctx: ProxyContext, route: ConnRoute, transport: asyncio.Transport, remote: str
    ) -> None:
        self.ctx = ctx
        self.route = route
        self.transport = transport
        self.remote = remote
        self.reader = RequestReader()
        self.exchange: Exchange | None = None
        self.closing = False  # we decided to close: read nothing more
        self.lost = False
        self.write_paused = False
        self._paused = 0
        self._held = 0
        self._wbuf: list[bytes] = []
        self._framing = Framing.NONE
        self._pumping = False
        self._unread = False  # the reader may hold bytes or an EOF not turned into events

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, buffered: bytes, eof: bool) -> None:
        """Take over the accepted transport; ``buffered`` = bytes read during detection."""
        self.transport.set_protocol(self)
        self.ctx.connections.add(self)
        if buffered:
            self.data_received(buffered)
        if eof:
            self.eof_received()

    @property
    def busy(self) -> bool:
        return self.exchange is not None

    def close_when_idle(self) -> None:
        if self.exchange is None:
            self.close()

    def abort(self) -> None:
        self.closing = True
        self.transport.abort()

    def close(self) -> None:
        self.closing = True
        self.transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        ex = self.exchange
        if ex is None and not self._pumping:
            got = self.reader.receive_message(data)  # the common case: one read, one request
            if got is not None:
                self._whole(*got)
                return
        else:
            if ex is not None and ex.request_complete:
                self._held += len(data)
                if self._held > _MAX_HELD:
                    self.pause_reading(PAUSE_PIPELINE, True)
            self.reader.receive_data(data)
        self._unread = True
        self._pump()

    def _whole(self, request: Event, body: bytes, end: EndOfMessage | None) -> None:
        """A request head read in one go, with its whole body and end when ``end`` is set
        (then it goes upstream at once); the rest, if any, comes through :meth:`_pump`."""
        self._begin(request)  # type: ignore[arg-type]
        ex = self.exchange
        if ex is None or end is None:
            self._unread = True
            self._pump()
            return
        self._unread = False  # the read was exactly this request: nothing left to pump
        if body:
            ex.request_body(body)
        ex.request_end(end)
        ex.start()  # the read held exactly this request: nothing else to pump

    def eof_received(self) -> bool:
        if not self.closing:
            self.reader.receive_data(b"")
            self._unread = True
            self._pump()
        return True  # keep our write side open: a response may still be on its way

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.closing = True
        self.ctx.connections.discard(self)
        if self.exchange is not None:
            self.exchange.client_gone()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None:
            self.exchange.client_writable(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None:
            self.exchange.client_writable(True)

    # -- requests ------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Turn buffered bytes into requests. Re-entry (an exchange that ends synchronously,
        e.g. an immediate error answer, calls :meth:`exchange_done`) is flattened into this
        loop, so a long pipeline of such requests never recurses."""
        if self._pumping:
            return
        self._pumping = True
        try:
            self._pump_events()
        finally:
            self._pumping = False

    def _pump_events(self) -> None:
        reader = self.reader
        while not self.closing:
            ex = self.exchange
            if ex is not None and ex.request_complete:
                if not ex.was_started:  # the whole request is read: go, in one write
                    ex.start()
                    continue
                return  # a pipelined request waits until this response is done
            try:
                event = reader.next_event()
            except RemoteProtocolError as exc:
                self._bad_request(exc)
                return
            if event is NEED_DATA:
                if ex is not None and not ex.was_started:  # the body streams: go with its head
                    ex.start()
                    continue
                return
            kind = type(event)
            if kind is Data:
                ex.request_body(event.data)  # type: ignore[union-attr]
            elif kind is EndOfMessage:
                ex.request_end(event)  # type: ignore[union-attr, arg-type]
            elif kind is Request:
                self._begin(event)  # type: ignore[arg-type]
            elif kind is ConnectionClosed:
                self.close()

    def _begin(self, request: Request) -> None:
        if request.method == b"CONNECT":
            self._refuse(ProxyError(Reason.BAD_REQUEST, self.route.destination,
                                    "CONNECT through the sidecar is not supported; declare the "
                                    "port appProtocol: tcp", status=501))
            return
        self._held = 0
        self.exchange = Exchange(self, request)  # started by _pump once the read is used up

    def exchange_done(self, keep_alive: bool) -> None:
        """The response is complete (called by the exchange)."""
        self.exchange = None
        self._held = 0
        if self._paused:
            self.pause_reading(PAUSE_PIPELINE | PAUSE_UPSTREAM | PAUSE_PREATTACH, False)
        if not keep_alive or self.ctx.draining or self.lost:
            self.close()
        elif self._unread:  # pipelined bytes (or an EOF) wait behind the finished request
            self._pump()

    def _bad_request(self, exc: RemoteProtocolError) -> None:
        """The client's bytes broke the HTTP/1.1 rules: answer the reader's status, close."""
        if self.exchange is not None:  # a bad body mid-request: the framing is gone
            self.exchange.request_broken(str(exc))
            self.abort()
            return
        detail = f"{exc.code.value}: {exc.detail}"
        self._refuse(ProxyError(Reason.BAD_REQUEST, self.route.destination, detail,
                                status=exc.status))

    def _refuse(self, err: ProxyError) -> None:
        self.transport.write(render(err, self.ctx.proxy_name, keep_alive=False))
        self.ctx.metrics.proxy_error(err.reason.value)
        self.ctx.metrics.request(
            reporter=self.route.reporter, source=self.route.source,
            destination=Peer.unknown(), service=self.route.service, protocol="http",
            status=err.code, grpc_status="", flags=err.reason.flag, latency_s=0.0,
        )  # fmt: skip
        if self.ctx.access_log.enabled:
            self.ctx.access_log.log({"start_time": time.time(), "response_code": err.code,
                                     "response_flags": err.reason.flag,
                                     "downstream_remote_address": self.remote,
                                     "reporter": self.route.reporter})
        self.close()

    # -- Downstream: the response, in HTTP/1.1 ------------------------------------------------
    def send_informational(self, event: InformationalResponse) -> None:
        self._wbuf.append(serialize_informational(event))

    def send_head(self, request: Request, response: Response, keep_alive: bool) -> bool:
        framing = self._framing = response_framing(response, request.method,
                                                   request.http_version)
        keep_alive = keep_alive and framing is not Framing.CLOSE
        self._wbuf.append(serialize_response(response, request_method=request.method,
                                             http_version=request.http_version,
                                             keep_alive=keep_alive, framing=framing))
        return keep_alive

    def send_body(self, data: bytes) -> None:
        framing = self._framing
        chunk = data if framing is _LENGTH else frame_data(framing, data)
        if chunk:
            self._wbuf.append(chunk)

    def send_end(self, trailers: Headers) -> None:
        if self._framing is _CHUNKED:  # frame_end writes nothing for the other framings
            self._wbuf.append(frame_end(_CHUNKED, trailers))

    def send_error(self, err: ProxyError, keep_alive: bool) -> None:
        self._wbuf.append(render(err, self.ctx.proxy_name, keep_alive=keep_alive))

    def flush(self) -> None:
        """Write what the exchange queued in one go (a head and the body that came in the
        same read cost one send, not two)."""
        buf = self._wbuf
        if buf:
            data = buf[0] if len(buf) == 1 else b"".join(buf)
            buf.clear()
            if not self.lost:
                self.transport.write(data)

    # -- flow control ---------------------------------------------------------------------------
    def pause_reading(self, reason: int, paused: bool) -> None:
        before = self._paused
        if not before and not paused:
            return  # the usual call: nothing paused, nothing to resume
        self._paused = before | reason if paused else before & ~reason
        if bool(before) == bool(self._paused) or self.lost:
            return
        with contextlib.suppress(RuntimeError):
            if self._paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()
