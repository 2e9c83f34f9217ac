"""HttpClient against small hand-written servers: pooling, errors, timeouts, odd framing."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from hybridmesh._http import (
    BadResponse,
    ConnectError,
    HttpClient,
    HttpServer,
    HttpTimeout,
    Request,
    Response,
    Router,
    UnixRequestError,
    unix_request,
)

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(handler: RawHandler) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def test_connect_refused_is_connect_error() -> None:
    async def main() -> None:
        server, port = await raw_server(lambda r, w: asyncio.sleep(0))
        server.close()
        await server.wait_closed()
        async with HttpClient() as client:
            with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
                await client.request("GET", f"http://127.0.0.1:{port}/")

    asyncio.run(main())


def test_unresolvable_host_is_connect_error() -> None:
    async def main() -> None:
        async with HttpClient() as client:
            with pytest.raises(ConnectError):
                await client.request("GET", "http://hm-no-such-host.invalid/", timeout=5)

    asyncio.run(main())


def test_timeout_and_connection_discarded() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    async def main() -> None:
        server, port = await raw_server(silent)
        async with HttpClient() as client:
            with pytest.raises(HttpTimeout):
                await client.request("GET", f"http://127.0.0.1:{port}/", timeout=0.2)
            assert not any(client._idle.values())
        server.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "answer",
    [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", b""],
)
def test_bad_response(answer: bytes) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(answer)
        writer.close()

    async def main() -> None:
        server, port = await raw_server(bad)
        async with HttpClient() as client:
            with pytest.raises(BadResponse):
                await client.request("GET", f"http://127.0.0.1:{port}/")
        server.close()

    asyncio.run(main())


def test_chunked_and_close_delimited_responses() -> None:
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nuntil-close",
        ]
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(next(answers))
        writer.close()

    async def main() -> None:
        server, port = await raw_server(serve)
        async with HttpClient() as client:
            r = await client.request("GET", f"http://127.0.0.1:{port}/")
            assert r.body == b"abcde"
            r = await client.request("GET", f"http://127.0.0.1:{port}/")
            assert r.body == b"until-close"
        server.close()

    asyncio.run(main())


def test_stale_pooled_connection_is_retried_once() -> None:
    """The server closes each connection after one answer without saying so in headers."""
    connections = 0

    async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, port = await raw_server(one_shot)
        async with HttpClient() as client:
            for _ in range(3):
                r = await client.request("GET", f"http://127.0.0.1:{port}/")
                assert r.body == b"ok"
                await asyncio.sleep(0.05)  # let the close arrive while the conn sits idle
        assert connections == 3
        server.close()

    asyncio.run(main())


def test_unix_request_sync_helper(tmp_path: Path) -> None:
    path = tmp_path / "hm-sync.sock"
    router = Router()

    @router.route("PUT", "/v1/thing")
    async def put(req: Request, params: dict[str, str]) -> Response:
        return Response.json({"got": req.json()}, status=201)

    ready = threading.Event()
    stop: list[Callable[[], object]] = []

    def serve() -> None:
        async def main() -> None:
            server = HttpServer(router)
            await server.start_unix(path)
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            stop.append(lambda: loop.call_soon_threadsafe(done.set))
            ready.set()
            await done.wait()
            await server.close()

        asyncio.run(main())

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert ready.wait(5)
        status, headers, body = unix_request(str(path), "PUT", "/v1/thing", b'{"a": 1}', 5)
        assert (status, body) == (201, b'{"got":{"a":1}}')
        assert headers["content-type"] == "application/json"
        status, _, _ = unix_request(str(path), "PUT", "/v1/thing", b"{not json", 5)
        assert status == 400
    finally:
        stop[0]()
        thread.join(5)
    with pytest.raises(UnixRequestError, match="no socket"):
        unix_request(str(tmp_path / "missing.sock"), "GET", "/", timeout=1)


def test_host_is_resolved_once_and_cached() -> None:
    """After the first lookup, new connections use the cached address, not a fresh lookup."""

    def answering(text: bytes) -> RawHandler:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_head(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n" + text
            )
            writer.close()

        return serve

    async def main() -> None:
        first, port = await raw_server(answering(b"1"))
        second, other_port = await raw_server(answering(b"2"))
        async with HttpClient() as client:
            assert (await client.request("GET", f"http://localhost:{port}/")).body == b"1"
            client._addresses[("localhost", port)] = [(socket.AF_INET, ("127.0.0.1", other_port))]
            assert (await client.request("GET", f"http://localhost:{port}/")).body == b"2"
        first.close()
        second.close()

    asyncio.run(main())
