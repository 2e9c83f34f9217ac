"""HttpServer over loopback TCP and a unix socket: framing, errors, keep-alive, shutdown."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hybridmesh._http import HttpClient, HttpError, HttpServer, Request, Response, Router


def make_router(events: dict[str, Any] | None = None) -> Router:
    router = Router()
    events = events if events is not None else {}

    @router.route("GET", "/hello")
    async def hello(req: Request, params: dict[str, str]) -> Response:
        return Response.text("hi")

    @router.route("POST", "/echo")
    async def echo(req: Request, params: dict[str, str]) -> Response:
        return Response(200, {"X-Len": str(len(req.body))}, req.body)

    @router.route("GET", "/items/{name}")
    async def item(req: Request, params: dict[str, str]) -> Response:
        return Response.json({"name": params["name"], "q": req.query_params()})

    @router.route("GET", "/sleep/{ms}")
    async def sleep(req: Request, params: dict[str, str]) -> Response:
        events["active"] = events.get("active", 0) + 1
        events["peak"] = max(events.get("peak", 0), events["active"])
        try:
            await asyncio.sleep(int(params["ms"]) / 1000)
        finally:
            events["active"] -= 1
        events.setdefault("slept", []).append(params["ms"])
        return Response.text(params["ms"])

    @router.route("GET", "/boom")
    async def boom(req: Request, params: dict[str, str]) -> Response:
        raise RuntimeError("handler bug")

    @router.route("GET", "/teapot")
    async def teapot(req: Request, params: dict[str, str]) -> Response:
        raise HttpError(418, "short and stout")

    @router.route("GET", "/header")
    async def header(req: Request, params: dict[str, str]) -> Response:
        return Response.text(req.headers.get("x-thing", "missing"))

    return router


def run_with_server(body: Callable[[HttpServer, int], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        server = HttpServer(make_router(kwargs.pop("events", None)), **kwargs)
        port = await server.start_tcp("127.0.0.1", 0)
        try:
            await body(server, port)
        finally:
            await server.close(timeout=5)

    asyncio.run(main())


async def raw_exchange(port: int, data: bytes, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        if read_until_close:
            return await asyncio.wait_for(reader.read(), 5)
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


def test_routes_params_query_and_case_insensitive_headers() -> None:
    async def body(server: HttpServer, port: int) -> None:
        async with HttpClient(f"http://127.0.0.1:{port}") as client:
            r = await client.request("GET", "/items/a%20b?x=1&y=2")
            assert r.status == 200
            assert r.json_body() == {"name": "a b", "q": {"x": "1", "y": "2"}}
            r = await client.request("GET", "/header", headers={"X-THING": "yes"})
            assert r.body == b"yes"
            assert r.headers["content-type"].startswith("text/plain")

    run_with_server(body)


def test_404_405_500_and_http_error() -> None:
    async def body(server: HttpServer, port: int) -> None:
        async with HttpClient(f"http://127.0.0.1:{port}") as client:
            assert (await client.request("GET", "/nope")).status == 404
            r = await client.request("DELETE", "/hello")
            assert r.status == 405
            assert r.headers["allow"] == "GET"
            assert (await client.request("GET", "/boom")).status == 500
            r = await client.request("GET", "/teapot")
            assert (r.status, r.body) == (418, b"short and stout\n")
            # the connection survived all of the above
            assert (await client.request("GET", "/hello")).body == b"hi"

    run_with_server(body)


def test_head_has_no_body_but_keeps_length() -> None:
    async def body(server: HttpServer, port: int) -> None:
        req = b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        data = await raw_exchange(port, req)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Length: 2\r\n" in data
        assert data.endswith(b"\r\n\r\n")

    run_with_server(body)


def test_chunked_request_body() -> None:
    async def body(server: HttpServer, port: int) -> None:
        req = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
            b"\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        data = await raw_exchange(port, req)
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert b"X-Len: 11" in data
        assert data.endswith(b"hello world")

    run_with_server(body)


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"\x00\xff\x16\x03\x01 tls hello",
    ],
)
def test_malformed_gets_400_and_close_server_survives(garbage: bytes) -> None:
    async def body(server: HttpServer, port: int) -> None:
        data = await raw_exchange(port, garbage)
        assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"Connection: close" in data
        async with HttpClient(f"http://127.0.0.1:{port}") as client:
            assert (await client.request("GET", "/hello")).status == 200

    run_with_server(body)


def test_oversized_head_gets_431_and_body_413() -> None:
    async def body(server: HttpServer, port: int) -> None:
        big = b"GET /hello HTTP/1.1\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
        assert (await raw_exchange(port, big)).startswith(b"HTTP/1.1 431 ")
        post = b"POST /echo HTTP/1.1\r\nContent-Length: 3000\r\n\r\n" + b"b" * 3000
        assert (await raw_exchange(port, post)).startswith(b"HTTP/1.1 413 ")

    run_with_server(body, max_head_bytes=4096, max_body_bytes=2048)


def test_pipelined_responses_come_back_in_order() -> None:
    async def body(server: HttpServer, port: int) -> None:
        # the slow one is first: a naive concurrent server would answer /sleep/1 first
        reqs = b"".join(
            f"GET /sleep/{ms} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for ms in (150, 1, 50)
        )
        reqs += b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        data = await raw_exchange(port, reqs)
        bodies = [chunk.split(b"\r\n\r\n", 1)[1][:3] for chunk in data.split(b"HTTP/1.1 ")[1:]]
        assert bodies == [b"150", b"1", b"50", b"hi"]

    run_with_server(body)


def test_keep_alive_connection_is_reused() -> None:
    async def body(server: HttpServer, port: int) -> None:
        async with HttpClient(f"http://127.0.0.1:{port}") as client:
            for _ in range(20):
                assert (await client.request("GET", "/hello")).status == 200
            assert server.connection_count == 1

    run_with_server(body)


def test_many_concurrent_long_handlers() -> None:
    events: dict[str, Any] = {}

    async def body(server: HttpServer, port: int) -> None:
        async with HttpClient(f"http://127.0.0.1:{port}") as client:
            loop = asyncio.get_running_loop()
            start = loop.time()
            results = await asyncio.gather(
                *(client.request("GET", "/sleep/300") for _ in range(200))
            )
            elapsed = loop.time() - start
            assert all(r.status == 200 for r in results)
            assert elapsed < 2.0, "long handlers must not serialise across connections"
            assert events["peak"] == 200

    run_with_server(body, events=events)


def test_close_waits_for_in_flight_request() -> None:
    events: dict[str, Any] = {}

    async def main() -> None:
        server = HttpServer(make_router(events))
        port = await server.start_tcp("127.0.0.1", 0)
        async with HttpClient(f"http://127.0.0.1:{port}") as client:
            pending = asyncio.gather(client.request("GET", "/sleep/300"))
            await asyncio.sleep(0.05)
            await server.close(timeout=5)
            (response,) = await pending
            assert response.status == 200
            assert response.headers.get("connection") == "close"
            assert events["slept"] == ["300"]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    asyncio.run(main())


def test_unix_socket_mode_and_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "hm-api.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # leaves a socket file nobody listens on, as after a crash

    async def main() -> None:
        server = HttpServer(make_router())
        await server.start_unix(path)
        try:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            async with HttpClient(unix_path=str(path)) as client:
                r = await client.request("POST", "/echo", body=b"over unix")
                assert (r.status, r.body) == (200, b"over unix")
        finally:
            await server.close()

    asyncio.run(main())


def test_client_disconnect_cancels_long_handler() -> None:
    events: dict[str, Any] = {}

    async def body(server: HttpServer, port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /sleep/500 HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
        await asyncio.sleep(0.7)
        assert "slept" not in events
        assert server.connection_count == 0

    run_with_server(body, events=events)


def test_idle_and_half_sent_connections_are_closed_but_long_handlers_are_not() -> None:
    async def body(server: HttpServer, port: int) -> None:
        _, idle = await asyncio.open_connection("127.0.0.1", port)
        partial_reader, partial = await asyncio.open_connection("127.0.0.1", port)
        partial.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        long_reader, long_poll = await asyncio.open_connection("127.0.0.1", port)
        long_poll.write(b"GET /sleep/600 HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.45)
        assert server.connection_count == 1  # only the long poll is left
        assert await asyncio.wait_for(partial_reader.read(), 1) == b""
        answer = await asyncio.wait_for(long_reader.readuntil(b"600"), 2)
        assert answer.startswith(b"HTTP/1.1 200 OK")
        for writer in (idle, partial, long_poll):
            writer.close()

    run_with_server(body, idle_timeout=0.2)
