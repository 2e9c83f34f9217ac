"""An asyncio HTTP/1.1 server on httptools: keep-alive, ordered pipelining, bounded heads.

One protocol object per connection. Parsed requests queue up and are handled one at a time,
so pipelined responses leave in request order; a handler may run for minutes (long-poll)
without blocking any other connection. Bad input never escapes as an exception: the peer gets
400/413/431 and the connection closes after the responses it is owed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httptools

from .message import Headers, HttpError, Request, Response, serialize_response_head

__all__ = ["App", "HttpServer"]

log = logging.getLogger(__name__)

App = Callable[[Request], Awaitable[Response]]

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_MAX_QUEUED = 32  # pipelined requests buffered before we stop reading the socket


class _RequestTooLarge(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Connection(asyncio.Protocol):
    """Parses one connection's byte stream and feeds requests to the app strictly in order."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[tuple[Request, bool] | Response] = deque()
        self._task: asyncio.Task[None] | None = None
        self._remote = ""
        self._broken = False  # stop parsing: an error response is queued, close after it
        self._paused = False
        self._idle: asyncio.TimerHandle | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._head_bytes = 0
        self._body_bytes = 0

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        self._server._connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._queue.clear()
        self._broken = True
        self._disarm_idle()
        if self._task is not None:
            self._task.cancel()  # nobody is left to read the answer (long-poll peer went away)

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Response.text("protocol upgrade is not supported\n", 400))
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _RequestTooLarge):
                self._fail(Response.text("request too large\n", cause.status))
            else:
                self._fail(Response.text(f"malformed request: {exc}\n", 400))
        self._pump()
        if self._task is None:
            self._arm_idle()  # mid-request or between requests: the peer must keep talking
        else:
            self._disarm_idle()  # a handler is running (maybe a long poll): not idle

    def _arm_idle(self) -> None:
        """(Re)start the idle clock; a peer whose network vanished (netns deleted) sends no FIN."""
        timeout = self._server.idle_timeout
        if timeout is None:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(timeout, self._on_idle)

    def _disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _on_idle(self) -> None:
        self._idle = None
        if self._task is None:
            self._close()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._server.max_body_bytes:
            raise _RequestTooLarge(413)
        self._body.append(body)

    def on_message_complete(self) -> None:
        try:
            url = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            raise _BadUrl() from None
        request = Request(
            method=self._parser.get_method().decode("ascii", "replace"),
            path=url.path.decode("latin-1") if url.path else "/",
            query=url.query.decode("latin-1") if url.query else "",
            headers=Headers(self._headers),
            body=b"".join(self._body),
            remote=self._remote,
        )
        self._queue.append((request, self._parser.should_keep_alive()))
        self._reset_message()

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self._server.max_head_bytes:
            raise _RequestTooLarge(431)

    # -- processing ------------------------------------------------------------------------------

    def _fail(self, response: Response) -> None:
        self._broken = True
        self._queue.append(response)

    def _pump(self) -> None:
        """Start the worker if needed; apply back-pressure when too much is queued."""
        if self._task is None and self._queue:
            self._task = self._server._spawn(self._work())
        if len(self._queue) > _MAX_QUEUED and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    async def _work(self) -> None:
        try:
            while self._queue and self._transport is not None:
                item = self._queue.popleft()
                if isinstance(item, Response):  # an error answer: the stream is unusable after it
                    self._write(item, keep_alive=False, head_only=False)
                    self._close()
                    return
                request, keep_alive = item
                response = await self._server._handle(request)
                keep_alive = keep_alive and not self._server.closing
                self._write(response, keep_alive, head_only=request.method == "HEAD")
                if not keep_alive:
                    self._close()
                    return
                if self._paused and len(self._queue) <= _MAX_QUEUED // 2:
                    self._paused = False
                    self._transport.resume_reading()
            if self._server.closing:
                self._close()
        finally:
            self._task = None
            if not self._broken:
                self._arm_idle()

    def _write(self, response: Response, keep_alive: bool, head_only: bool) -> None:
        assert self._transport is not None
        head = serialize_response_head(response, keep_alive)
        self._transport.write(head if head_only else head + response.body)

    def _close(self) -> None:
        self._queue.clear()
        self._broken = True
        if self._transport is not None:
            self._transport.close()

    def close_if_idle(self) -> None:
        if self._task is None:
            self._close()


class _BadUrl(Exception):
    pass


class HttpServer:
    """Serves ``app`` (usually a :class:`~hybridmesh._http.router.Router`) on TCP or unix."""

    def __init__(
        self,
        app: App,
        *,
        max_head_bytes: int = MAX_HEAD_BYTES,
        max_body_bytes: int = MAX_BODY_BYTES,
        idle_timeout: float | None = 300.0,
    ) -> None:
        self.app = app
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        """Close a connection with no request in progress after this long without bytes."""
        self.closing = False
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start_tcp(self, host: str, port: int, backlog: int = 1024) -> int:
        """Listen on host:port; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=backlog, reuse_address=True
        )
        self._servers.append(server)
        sock: socket.socket = server.sockets[0]
        return int(sock.getsockname()[1])

    async def start_unix(self, path: str | os.PathLike[str], mode: int = 0o600) -> None:
        """Listen on a filesystem unix socket; a stale socket file left by a crash is replaced."""
        target = Path(path)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(target.lstat().st_mode):
                target.unlink()
        loop = asyncio.get_running_loop()
        old_umask = os.umask(0o077)  # no window in which the socket is world-accessible
        try:
            server = await loop.create_unix_server(lambda: _Connection(self), str(target))
        finally:
            os.umask(old_umask)
        os.chmod(target, mode)
        self._servers.append(server)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), then drop the rest."""
        self.closing = True
        for server in self._servers:
            server.close()
        for conn in list(self._connections):
            conn.close_if_idle()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for conn in list(self._connections):
            conn._close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _handle(self, request: Request) -> Response:
        """Run the app; typed HttpErrors become their status, anything else a logged 500."""
        try:
            return await self.app(request)
        except HttpError as exc:
            return exc.to_response()
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            return Response.text("internal server error\n", 500)
