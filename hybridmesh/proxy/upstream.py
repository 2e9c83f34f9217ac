"""Upstream connections: marked sockets, typed connect failures, HTTP/1 keep-alive pools.

Every socket the proxy opens towards an upstream carries ``SO_MARK 0x539`` so the pod's capture
rules let it through instead of redirecting it back into the proxy (a loop). Connects are
bounded by the connect timeout and fail with a :class:`ConnectFailed` that says why, so the
caller can pick the right error response (502 refused, 504 timeout) and tell outlier
detection.

:class:`H1Upstream` is one HTTP/1.1 connection: a :class:`ResponseReader` turning bytes into
events that go to the *sink* (the request currently using the connection). :class:`Pool` keeps
idle connections per endpoint, LIFO (the warmest first), closes ones idle too long, and dials
for the requests that find none, a few at a time (``_dialgate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, TypeVar

from hybridmesh.proxy._dialgate import DialQueue
from hybridmesh.proxy._sockopt import set_mark, tune_stream
from hybridmesh.proxy.protocols.http1 import (
    NEED_DATA,
    Data,
    EndOfMessage,
    Event,
    Framing,
    Headers,
    InformationalResponse,
    NeedData,
    ReaderState,
    RemoteProtocolError,
    Request,
    Response,
    ResponseReader,
    frame_data,
    frame_end,
    request_framing,
    serialize_request,
)
from hybridmesh.proxy.streams import ResponseSink

__all__ = [
    "ConnectFailed",
    "Connector",
    "EndpointKey",
    "H1Upstream",
    "Pool",
    "connect",
    "open_socket",
]

log = logging.getLogger(__name__)

EndpointKey = tuple[str, int]
"""(ip, port) of an upstream: what the balancer picks and the pool is keyed by."""

P = TypeVar("P", bound=asyncio.Protocol)
_MAX_IDLE_S = 60.0
# per request: an Enum member lookup costs ~5x a global read
_IDLE, _CHUNKED = ReaderState.IDLE, Framing.CHUNKED


class ConnectFailed(Exception):
    """The upstream could not be reached; ``timeout`` tells a 504 from a 502. ``reason``
    (an ``errors.Reason`` value) overrides both, e.g. ``connect-peer-auth`` for an mTLS
    handshake or secure-naming failure."""

    def __init__(self, key: EndpointKey, detail: str, *, timeout: bool = False,
                 reason: str | None = None) -> None:
        super().__init__(f"{key[0]}:{key[1]}: {detail}")
        self.key = key
        self.detail = detail
        self.timeout = timeout
        self.reason = reason


async def open_socket(key: EndpointKey, *, mark: int | None, timeout: float) -> socket.socket:
    """A connected, non-blocking, marked TCP socket to ``key`` (:class:`ConnectFailed`)."""
    sock = socket.socket(socket.AF_INET6 if ":" in key[0] else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if mark is not None:
            set_mark(sock, mark)
        tune_stream(sock)
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, key)
    except TimeoutError:
        sock.close()
        detail = f"no answer within {timeout * 1000:.0f} ms"
        raise ConnectFailed(key, detail, timeout=True) from None
    except OSError as exc:
        sock.close()
        detail = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        raise ConnectFailed(key, detail) from None
    except BaseException:
        sock.close()
        raise
    return sock


async def connect(
    key: EndpointKey, factory: Callable[[], P], *, mark: int | None, timeout: float
) -> tuple[asyncio.Transport, P]:
    """A transport + protocol over a fresh marked connection to ``key``."""
    sock = await open_socket(key, mark=mark, timeout=timeout)
    try:
        transport, proto = await asyncio.get_running_loop().create_connection(factory, sock=sock)
    except OSError as exc:
        sock.close()
        raise ConnectFailed(key, str(exc)) from None
    return transport, proto


class H1Upstream(asyncio.Protocol):
    """One pooled HTTP/1.1 connection to an endpoint; events go to the current sink.

    It is its own :class:`~hybridmesh.proxy.streams.UpstreamStream`: one request at a time.
    """

    def __init__(self, pool: Pool, key: EndpointKey) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.sink: ResponseSink | None = None
        self.closed = False
        self.uses = 0  # requests sent on this connection
        self.received = False  # any byte received for the current request
        self.idle_since = 0.0
        self._framing = Framing.NONE

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:  # an idle connection must be silent: anything else is unsafe
            self.abort()
            return
        self.received = True
        got = self.reader.receive_message(data)  # the common case: one read, one response
        if got is None:
            self._pump(sink, None)
            return
        head, body, end = got
        if end is not None and type(head) is Response:
            sink.on_message(head, body, end)
        else:
            self._pump(sink, head)

    def eof_received(self) -> bool:
        sink = self.sink
        if sink is not None and not self.closed:
            self.reader.receive_data(b"")
            self._pump(sink, None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        sink, self.sink = self.sink, None
        self.pool.forget(self)
        if sink is not None:
            sink.on_upstream_error(None, str(exc) if exc else "connection closed")

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_upstream_writable(False)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_upstream_writable(True)

    # -- events ----------------------------------------------------------------------------
    def _pump(self, sink: ResponseSink, event: Event | NeedData | None) -> None:
        """Hand the reader's events (``event`` first, if given) to ``sink``, in order."""
        reader = self.reader
        try:
            while self.sink is sink:
                if event is None:
                    event = reader.next_event()
                if event is NEED_DATA:
                    return
                if isinstance(event, Data):
                    sink.on_body(event.data)
                elif isinstance(event, Response):
                    sink.on_response(event)
                elif isinstance(event, EndOfMessage):
                    sink.on_end(event)
                elif isinstance(event, InformationalResponse):
                    sink.on_informational(event)
                else:  # ConnectionClosed between messages: no response at all
                    self.detach()
                    self.abort()
                    sink.on_upstream_error(None, "closed before responding")
                event = None
        except RemoteProtocolError as exc:
            self.detach()
            self.abort()
            sink.on_upstream_error(exc, str(exc))
        finally:
            sink.on_batch_end()  # the events of one read leave in one write downstream

    # -- use by a request ------------------------------------------------------------------
    def attach(self, sink: ResponseSink, method: bytes) -> None:
        self.sink = sink
        self.uses += 1
        self.received = False
        self.reader.expect(method)

    def detach(self) -> None:
        self.sink = None

    @property
    def reusable(self) -> bool:
        """After a complete response: may go back to the pool."""
        return not self.closed and self.reader.state is _IDLE and (
            self.transport is not None and not self.transport.is_closing()
        )

    def write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_request(self, request: Request, body: list[bytes], end: EndOfMessage | None
                     ) -> None:
        """The head (re-serialized canonically), the body so far and maybe its end, in one
        write."""
        framing = self._framing = request_framing(request)
        head = serialize_request(request, framing=framing)
        if body or (end is not None and framing is _CHUNKED):
            parts = [head]
            parts += (frame_data(framing, chunk) for chunk in body)
            if end is not None:
                parts.append(frame_end(framing, end.trailers))
            head = b"".join(parts)
        if self.transport is not None and not self.closed:  # write(), inlined
            self.transport.write(head)

    def send_body(self, data: bytes) -> None:
        self.write(frame_data(self._framing, data))

    def send_end(self, trailers: Headers) -> None:
        self.write(frame_end(self._framing, trailers))

    def release(self) -> None:
        self.pool.release(self)

    def pause_reading(self, paused: bool) -> None:
        if self.transport is None or self.closed:
            return
        with contextlib.suppress(RuntimeError):
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Connector(Protocol):
    """How a pool dials: :func:`connect` (plain TCP) or mtls.py's TLS connector."""

    async def __call__(self, key: EndpointKey, factory: Callable[[], P], *, mark: int | None,
                       timeout: float) -> tuple[asyncio.Transport, P]: ...


class Pool:
    """Idle HTTP/1.1 connections per endpoint (LIFO); requests that find none queue for
    the next one free, and the pool dials for them (``_dialgate``)."""

    def __init__(
        self, *, mark: int | None, connect_timeout: float, max_idle_per_key: int = 128,
        connector: Connector = connect,
    ) -> None:
        self.mark = mark
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle_per_key
        self.connector = connector
        self._idle: dict[EndpointKey, deque[H1Upstream]] = {}
        self._queue: DialQueue[EndpointKey, H1Upstream] = DialQueue()
        self._dials: set[asyncio.Task[None]] = set()  # strong references while they run
        self._closed = False
        self.opened = 0

    def take_idle(self, key: EndpointKey) -> H1Upstream | None:
        """The warmest idle connection to ``key``, if any: no await needed."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def acquire(self, key: EndpointKey, *, fresh: bool = False) -> H1Upstream:
        """An idle connection to ``key``, else the first one free for us: dialled by the
        pool or released by another exchange (ConnectFailed). ``fresh``: a new connection of
        our own, whatever the pool holds (the redo after a stale pooled connection)."""
        if fresh:
            return await self._dial(key)
        conn = self.take_idle(key)
        if conn is not None:
            return conn
        fut = self._queue.wait(key)
        self._dial_more(key)
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await fut
        except TimeoutError:
            self._pass_on(fut)
            raise ConnectFailed(key, "no connection free in time", timeout=True) from None
        except asyncio.CancelledError:
            self._pass_on(fut)
            raise

    async def _dial(self, key: EndpointKey) -> H1Upstream:
        _, conn = await self.connector(key, lambda: H1Upstream(self, key), mark=self.mark,
                                       timeout=self.connect_timeout)
        self.opened += 1
        return conn

    def _dial_more(self, key: EndpointKey) -> None:
        """Dial for the waiters no dial covers yet (within the per-endpoint limit)."""
        queue = self._queue
        for _ in range(queue.dials_wanted(key)):
            queue.dial_started(key)
            task = asyncio.get_running_loop().create_task(self._dial_for_waiters(key))
            self._dials.add(task)
            task.add_done_callback(self._dials.discard)

    async def _dial_for_waiters(self, key: EndpointKey) -> None:
        try:
            conn = await self._dial(key)
        except Exception as exc:  # ConnectFailed, or a connector's bug: a waiter hears it
            self._queue.dial_ended(key)
            self._queue.fail(key, exc)
        else:
            self._queue.dial_ended(key)
            self.release(conn)  # to the oldest waiter, else idle
        self._dial_more(key)

    def _pass_on(self, fut: asyncio.Future[H1Upstream]) -> None:
        """We stopped waiting: a connection given to us just then goes to the next."""
        if not fut.done():
            fut.cancel()
        elif not fut.cancelled() and fut.exception() is None:
            self.release(fut.result())

    def release(self, conn: H1Upstream) -> None:
        """Back to the pool after a complete exchange (to a request waiting for one first),
        or closed if it cannot be reused."""
        conn.sink = None  # detach()
        if not conn.reusable:
            conn.abort()
            return
        if self._queue.deliver(conn.key, conn):
            return
        idle = self._idle.get(conn.key)
        if idle is None:  # not setdefault: that would build a deque on every release
            idle = self._idle[conn.key] = deque()
        if self._closed or len(idle) >= self.max_idle:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def forget(self, conn: H1Upstream) -> None:
        idle = self._idle.get(conn.key)
        if idle:
            with contextlib.suppress(ValueError):
                idle.remove(conn)

    def sweep(self, max_idle_s: float = _MAX_IDLE_S) -> int:
        """Close connections idle longer than ``max_idle_s``; returns how many."""
        cutoff = time.monotonic() - max_idle_s
        closed = 0
        for idle in self._idle.values():
            while idle and idle[0].idle_since < cutoff:
                idle.popleft().abort()
                closed += 1
        return closed

    def idle_count(self) -> int:
        return sum(len(d) for d in self._idle.values())

    def close(self) -> None:
        """Close the idle; dials in flight still serve waiters (what comes back later closes)."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
