"""HTTP/2 upstreams: multiplexed, pooled connections; one :class:`H2UpstreamStream` per request.

Used when the client itself speaks HTTP/2 (gRPC, h2c prior knowledge), when the destination
port declares ``appProtocol: http2|grpc``, and for the optional HTTP/1.1→HTTP/2 upgrade between
meshed proxies. One connection per endpoint carries up to the peer's
SETTINGS_MAX_CONCURRENT_STREAMS requests; a second one opens when it is full or draining
(GOAWAY). Concurrent requests that find no connection wait for the one being dialled instead
of each opening their own.

Backpressure: the upstream's DATA is acknowledged (its window reopened) only while the client
keeps up; a paused stream holds its acknowledgements until the client drains, so h2's flow
control slows the upstream down. Sends beyond the upstream's window queue in the h2 core and
pause reading the client until :class:`WindowOpened`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from hybridmesh.proxy.h2pool import H2Pool
from hybridmesh.proxy.protocols.http1 import (
    END_OF_MESSAGE,
    EndOfMessage,
    Headers,
    Request,
)
from hybridmesh.proxy.protocols.http1 import (
    InformationalResponse as H1Informational,
)
from hybridmesh.proxy.protocols.http2 import (
    CONNECTION_SPECIFIC,
    ConnectionAbuse,
    ConnectionTerminated,
    Data,
    H2Client,
    H2ErrorCode,
    InformationalResponse,
    ProtocolViolation,
    ResponseHeaders,
    StreamReset,
    Trailers,
    WindowOpened,
    h1_request_head,
    h2_response_to_h1,
)
from hybridmesh.proxy.streams import ResponseSink
from hybridmesh.proxy.upstream import EndpointKey

__all__ = ["H2Connection", "H2Pool", "H2UpstreamStream", "h2_fields"]


def h2_fields(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Regular fields HTTP/2 may carry (connection-specific ones dropped, ``te`` only as
    ``trailers``): what is left of an HTTP/1 trailer section or head."""
    return [(n, v) for n, v in headers
            if n not in CONNECTION_SPECIFIC and n != b"host" and (n != b"te" or v == b"trailers")]


class H2UpstreamStream:
    """One request on an HTTP/2 upstream connection (see streams.UpstreamStream)."""

    def __init__(self, conn: H2Connection) -> None:
        self.conn = conn
        self.sid = 0
        self.sink: ResponseSink | None = None
        self.uses = conn.uses
        self.received = False
        self._paused = False
        self._unacked = 0
        self._held = b""  # the last body chunk, sent with END_STREAM if the end follows

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def attach(self, sink: ResponseSink, method: bytes) -> None:
        self.sink = sink

    def send_request(self, request: Request, body: list[bytes], end: EndOfMessage | None
                     ) -> None:
        method, scheme, authority, path, fields = h1_request_head(request)
        only_head = end is not None and not body and not end.trailers
        self.sid = self.conn.client.send_request(method, scheme, authority, path,
                                                 headers=fields, end_stream=only_head)
        self.conn.streams[self.sid] = self
        for chunk in body:
            self.send_body(chunk)
        if end is not None and not only_head:
            self.send_end(end.trailers)
        self.conn.flush_soon()

    def send_body(self, data: bytes) -> None:
        """Held until the end or the connection's flush, whichever comes first: a body
        whose end follows leaves as one DATA frame carrying END_STREAM, not two."""
        if not data:
            return
        if self._held:
            self.send_held()
        self._held = data
        self.conn.hold(self)

    def send_held(self) -> None:
        """Send the held chunk (the connection flushes, or another chunk follows)."""
        data, self._held = self._held, b""
        if data and self.conn.client.send_data(self.sid, data) and self.sink is not None:
            self.sink.on_upstream_writable(False)  # queued beyond the window

    def send_end(self, trailers: Headers) -> None:
        fields = h2_fields(trailers)
        if fields:
            self.send_held()
            self.conn.client.send_trailers(self.sid, fields)
        else:  # complete: a queued remainder needs no pause, nothing more is read for it
            data, self._held = self._held, b""
            self.conn.client.send_data(self.sid, data, end_stream=True)
        self.conn.flush_soon()

    def acknowledge(self, n: int) -> None:
        if self._paused:
            self._unacked += n
        else:
            self.conn.client.acknowledge_received(self.sid, n)

    def pause_reading(self, paused: bool) -> None:
        self._paused = paused
        if not paused and self._unacked:
            n, self._unacked = self._unacked, 0
            self.conn.client.acknowledge_received(self.sid, n)
            self.conn.flush_soon()

    def detach(self) -> None:
        self.sink = None

    def abort(self) -> None:
        self._held = b""
        if self.sid:
            self.conn.client.reset(self.sid, H2ErrorCode.CANCEL)
            self.conn.streams.pop(self.sid, None)
            self.conn.flush_soon()

    def release(self) -> None:
        self.sink = None
        self.conn.streams.pop(self.sid, None)


class H2Connection(asyncio.Protocol):
    """One multiplexed connection to an endpoint; events go to each stream's sink."""

    def __init__(self, pool: H2Pool, key: EndpointKey) -> None:
        self.pool = pool
        self.key = key
        self.client = H2Client()
        self.streams: dict[int, H2UpstreamStream] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.draining = False
        self.uses = 0
        self._flush_pending = False
        self._held: dict[H2UpstreamStream, None] = {}  # streams holding a chunk, in order

    @property
    def usable(self) -> bool:
        return not (self.closed or self.draining) and self.client.can_open_stream()

    def new_stream(self) -> H2UpstreamStream:
        self.uses += 1
        return H2UpstreamStream(self)

    # -- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if transport.get_extra_info("ssl_object") is not None:
            self.client.trust_peer()  # mtls.py verified it: a mesh proxy's inbound side
        self.flush()  # preface + SETTINGS

    def data_received(self, data: bytes) -> None:
        touched: dict[int, ResponseSink] = {}
        for ev in self.client.receive_data(data):
            self._dispatch(ev, touched)
        self.flush()
        for sink in touched.values():
            sink.on_batch_end()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if stream.sink is not None:
                stream.sink.on_upstream_error(None, str(exc) if exc else "connection closed")

    # -- events ---------------------------------------------------------------------------------
    def _dispatch(self, ev: object, touched: dict[int, ResponseSink]) -> None:
        if isinstance(ev, ConnectionTerminated):
            self.draining = True  # the h2 core reports refused streams as resets
            return
        if isinstance(ev, ConnectionAbuse | ProtocolViolation):
            self.closed = True
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        stream = self.streams.get(getattr(ev, "stream_id", 0))
        sink = stream.sink if stream is not None else None
        if stream is None or sink is None:
            if isinstance(ev, Data):
                self.client.acknowledge_received(ev.stream_id, ev.flow_controlled_length)
            return
        touched[stream.sid] = sink
        stream.received = True
        if isinstance(ev, Data):
            sink.on_body(ev.data)
            stream.acknowledge(ev.flow_controlled_length)
            if ev.end_stream:
                sink.on_end(END_OF_MESSAGE)
        elif isinstance(ev, ResponseHeaders):
            sink.on_response(h2_response_to_h1(ev))
            if ev.end_stream:
                sink.on_end(END_OF_MESSAGE)
        elif isinstance(ev, Trailers):
            sink.on_end(EndOfMessage(ev.headers))
        elif isinstance(ev, InformationalResponse):
            sink.on_informational(H1Informational(ev.status, b"", ev.headers))
        elif isinstance(ev, StreamReset):
            self.streams.pop(stream.sid, None)
            refused = ev.code == H2ErrorCode.REFUSED_STREAM
            sink.on_upstream_error(None, f"stream reset by the upstream (code {ev.code})",
                                   refused=refused)
        elif isinstance(ev, WindowOpened):
            sink.on_upstream_writable(True)

    # -- writing --------------------------------------------------------------------------------
    def hold(self, stream: H2UpstreamStream) -> None:
        """``stream`` holds a chunk: it leaves with the stream's end, or at the latest with
        this iteration's flush."""
        self._held[stream] = None
        self.flush_soon()

    def flush(self) -> None:
        self._flush_pending = False
        if self._held:
            held, self._held = self._held, {}
            for stream in held:
                stream.send_held()
        data = self.client.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def flush_soon(self) -> None:
        """Coalesce the frames of every stream touched in this loop iteration into one
        write."""
        if not self._flush_pending and self.transport is not None:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
