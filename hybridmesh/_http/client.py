"""A keep-alive HTTP/1.1 client with a connection pool per (host, port) or unix socket path.

One request at a time per connection (no pipelining), parsed by httptools. A connection goes
back to the pool only after a complete response the server agreed to keep alive; anything
odd (timeout, parse error, early close) throws the connection away. Host names are resolved
once with the loop's getaddrinfo and cached: inside lab pods they come from /etc/hosts and
never change.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from .message import Headers, Response
from .sync import unix_request

__all__ = [
    "BadResponse",
    "ConnectError",
    "HttpClient",
    "HttpClientError",
    "HttpTimeout",
    "unix_request",
]


_URL_CACHE_SIZE = 1024


class HttpClientError(Exception):
    """Base of every error the client raises: the request got no usable response."""


class ConnectError(HttpClientError):
    """The connection could not be made (refused, unreachable, name did not resolve)."""


class HttpTimeout(HttpClientError):
    """No complete response within the request's timeout."""


class BadResponse(HttpClientError):
    """The peer answered with something that is not valid HTTP/1.1, or closed mid-response."""


@dataclass(frozen=True, slots=True)
class _Target:
    """Where to connect; it is also the pool key."""

    host: str
    port: int
    unix_path: str | None = None

    @property
    def host_header(self) -> str:
        if self.unix_path is not None:
            return "localhost"
        return self.host if self.port == 80 else f"{self.host}:{self.port}"


class _ClientConnection(asyncio.Protocol):
    """One pooled connection; ``exchange`` sends a request and waits for its response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._head_only = False
        self._received_any = False
        self._reset()

    def _reset(self) -> None:
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self.keep_alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and "content-length" not in Headers(self._headers):
            self._complete()  # a body delimited by connection close (RFC 9112 §6.3 rule 8)
        else:
            what = "before responding" if not self._received_any else "mid-response"
            waiter.set_exception(BadResponse(f"connection closed {what}"))

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        if self._waiter is None or self._waiter.done():
            self.abort()  # unsolicited bytes: the stream can no longer be trusted
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"malformed response: {exc}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._head_only:  # a HEAD answer has no body whatever Content-Length says
            self._complete()
            self.closed = True  # httptools cannot skip the body, so this stream is done
            self.abort()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete()

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        self.keep_alive = bool(self._parser.should_keep_alive()) and not self.closed
        status = self._parser.get_status_code()
        waiter.set_result(Response(status, Headers(self._headers), b"".join(self._body)))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def fresh(self) -> bool:
        """True until the peer has sent anything: a failure then means no request was seen."""
        return not self._received_any

    async def exchange(self, payload: bytes, head_only: bool) -> Response:
        assert self.transport is not None
        self._reset()
        self._received_any = False
        self._head_only = head_only
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        try:
            return await self._waiter
        finally:
            self._waiter = None


class HttpClient:
    """Pooled client. ``base_url`` or ``unix_path`` lets callers pass just a path."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        unix_path: str | None = None,
        max_idle_per_host: int = 128,
    ) -> None:
        self._base = _parse_target(base_url)[0] if base_url else None
        if unix_path is not None:
            self._base = _Target("localhost", 0, unix_path)
        self._idle: dict[_Target, deque[_ClientConnection]] = {}
        self._addresses: dict[tuple[str, int], list[tuple[int, tuple[str, int]]]] = {}
        self._closed = False
        self._max_idle = max_idle_per_host
        self._parsed_urls: dict[str, tuple[_Target, str]] = {}

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        timeout: float | None = 10.0,
    ) -> Response:
        """Send one request and return the complete response (any status is a response)."""
        target, path = self._resolve_url(url)
        payload = _serialize_request(method, path, target, headers, body)
        try:
            async with asyncio.timeout(timeout):
                return await self._send(target, payload, method.upper() == "HEAD")
        except TimeoutError:
            raise HttpTimeout(f"{method} {url}: no response within {timeout}s") from None

    async def close(self) -> None:
        """Close idle connections; in-flight requests keep theirs until they finish."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _resolve_url(self, url: str) -> tuple[_Target, str]:
        if url.startswith("/"):
            if self._base is None:
                raise ValueError(f"relative URL {url!r} needs a client with base_url or unix_path")
            return self._base, url
        parsed = self._parsed_urls.get(url)
        if parsed is None:  # services call the same few URLs millions of times: parse once
            if len(self._parsed_urls) >= _URL_CACHE_SIZE:
                self._parsed_urls.clear()
            parsed = self._parsed_urls[url] = _parse_target(url)
        return parsed

    async def _send(self, target: _Target, payload: bytes, head_only: bool) -> Response:
        conn, reused = await self._acquire(target)
        try:
            try:
                response = await conn.exchange(payload, head_only)
            except BadResponse:
                if not (reused and conn.fresh):
                    raise
                # The server closed an idle pooled connection as we reused it: the request was
                # never seen, so one retry on a new connection is safe.
                conn = await self._connect(target)
                response = await conn.exchange(payload, head_only)
        except BaseException:
            conn.abort()  # timeout or cancellation: the response may still arrive, unwanted
            raise
        self._release(target, conn)
        return response

    async def _acquire(self, target: _Target) -> tuple[_ClientConnection, bool]:
        idle = self._idle.get(target)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn, True
        return await self._connect(target), False

    def _release(self, target: _Target, conn: _ClientConnection) -> None:
        if not conn.keep_alive or conn.closed or self._closed:
            conn.abort()
            return
        idle = self._idle.setdefault(target, deque())
        if len(idle) >= self._max_idle:
            conn.abort()
        else:
            idle.append(conn)

    async def _connect(self, target: _Target) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        try:
            if target.unix_path is not None:
                transport, conn = await loop.create_unix_connection(
                    _ClientConnection, target.unix_path
                )
            else:
                transport, conn = await self._connect_tcp(target.host, target.port)
        except OSError as exc:
            where = target.unix_path or f"{target.host}:{target.port}"
            raise ConnectError(f"cannot connect to {where}: {exc.strerror or exc}") from None
        # uvloop may deliver connection_made a tick after create_connection returns
        conn.transport = transport
        if target.unix_path is None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    async def _connect_tcp(
        self, host: str, port: int
    ) -> tuple[asyncio.Transport, _ClientConnection]:
        """Try the resolved addresses in order; the one that answers moves to the front."""
        loop = asyncio.get_running_loop()
        addresses = await self._resolve(host, port)
        error: OSError = OSError(f"{host} did not resolve")
        for family, (ip, ip_port) in list(addresses):
            try:
                result = await loop.create_connection(_ClientConnection, ip, ip_port, family=family)
            except OSError as exc:
                error = exc
                continue
            if addresses[0] != (family, (ip, ip_port)):
                addresses.remove((family, (ip, ip_port)))
                addresses.insert(0, (family, (ip, ip_port)))
            return result
        raise error

    async def _resolve(self, host: str, port: int) -> list[tuple[int, tuple[str, int]]]:
        """getaddrinfo once per (host, port): in lab pods names come from a static /etc/hosts."""
        key = (host, port)
        cached = self._addresses.get(key)
        if cached is not None:
            return cached
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        result = [(int(info[0]), (str(info[4][0]), int(info[4][1]))) for info in infos]
        if result:
            self._addresses[key] = result
        return result


def _parse_target(url: str) -> tuple[_Target, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r}: expected http://host[:port]/path")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(parts.hostname, parts.port or 80), path


def _serialize_request(
    method: str, path: str, target: _Target, headers: dict[str, str] | None, body: bytes
) -> bytes:
    lines = [f"{method.upper()} {path} HTTP/1.1"]
    given = {k.lower() for k in headers} if headers else set()
    if "host" not in given:
        lines.append(f"Host: {target.host_header}")
    if headers:
        lines.extend(
            f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("content-length",)
        )
    if body or method.upper() not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
