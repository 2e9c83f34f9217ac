"""HTTP/1.1 corner cases through a real worker: versions, HEAD, 100-continue, trailers,
per-try timeouts, stale pooled connections, clients that vanish, the access log."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvloop
from proxy_harness import (
    Backend,
    get,
    ok,
    read_response,
    running_proxy,
    start_backends,
    start_group,
    web_service,
)

from hybridmesh._http import Request, Response
from hybridmesh.telemetry.proxy_metrics import AccessLog


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def route(*, backend_ms: int | None = None, request_ms: int | None = None,
          codes: tuple[int, ...] = (), attempts: int = 0,
          backends: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    retry = {"codes": list(codes), "attempts": attempts, "backoffMs": 1} if attempts else None
    return {"name": "default/r", "service": "default/web", "port": None, "hostnames": [],
            "rules": [{"matches": [], "backends": backends or [],
                       "timeouts": {"requestMs": request_ms, "backendRequestMs": backend_ms},
                       "retry": retry}]}


async def raw_backend(handler: Any) -> tuple[asyncio.AbstractServer, Backend]:
    server = await asyncio.start_server(handler, "127.0.0.2", 0)
    port = server.sockets[0].getsockname()[1]
    return server, Backend("127.0.0.2", ok, port)


def test_http10_client_gets_a_close_delimited_or_sized_answer(tmp_path: Path) -> None:
    async def chunky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        server, backend = await raw_backend(chunky)
        async with running_proxy(tmp_path, [web_service([backend], backend.port)]) as h:
            resp = await h.exchange(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
            head, body = resp.split(b"\r\n\r\n", 1)
            assert b"transfer-encoding" not in head.lower()  # 1.0 cannot read chunks
            assert b"connection: close" in head.lower() and body == b"hello"
        server.close()

    run(main())


def test_head_and_chunked_trailers_pass_through(tmp_path: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                             b"Trailer: x-sum\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 42\r\n\r\n")
            await writer.drain()

    async def main() -> None:
        server, backend = await raw_backend(handler)
        async with running_proxy(tmp_path, [web_service([backend], backend.port)]) as h:
            reader, writer = await h.open()
            writer.write(b"HEAD / HTTP/1.1\r\nHost: web\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert b"content-length: 1234" in head.lower()
            writer.write(b"GET / HTTP/1.1\r\nHost: web\r\nTE: trailers\r\n\r\n")
            data = await asyncio.wait_for(reader.readuntil(b"x-sum: 42\r\n\r\n"), 5)
            assert b"transfer-encoding: chunked" in data.lower() and b"3\r\nabc\r\n" in data
            writer.close()
        server.close()

    run(main())


def test_expect_100_continue_is_relayed_not_deadlocked(tmp_path: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"expect: 100-continue" in head.lower()
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        body = await reader.readexactly(5)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body.upper())
        await writer.drain()

    async def main() -> None:
        server, backend = await raw_backend(handler)
        async with running_proxy(tmp_path, [web_service([backend], backend.port)]) as h:
            reader, writer = await h.open()
            writer.write(b"PUT /u HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim.startswith(b"HTTP/1.1 100 ")
            writer.write(b"hello")
            resp = await asyncio.wait_for(read_response(reader), 5)
            assert resp.endswith(b"HELLO")
            writer.close()
        server.close()

    run(main())


def test_per_try_timeout_retries_elsewhere(tmp_path: Path) -> None:
    async def hang(req: Request) -> Response:
        await asyncio.sleep(5)
        return Response.text("late\n")

    async def main() -> None:
        slow, fast = await start_group(hang, ok)
        async with running_proxy(tmp_path, [web_service([slow, fast], slow.port)],
                                 [route(backend_ms=100, codes=(504,), attempts=2)]) as h:
            for _ in range(6):
                resp = await h.exchange(get("/t", close=True))
                assert resp.startswith(b"HTTP/1.1 200 "), resp[:200]
            assert slow.seen, "the hanging endpoint was never tried: the test proves nothing"
            assert h.metric("retry_total") == len(slow.seen)
        await slow.stop()
        await fast.stop()

    run(main())


def test_all_zero_weights_is_a_500_no_backend(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        zero = route(backends=[{"service": "default/web", "port": 80, "weight": 0}])
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)],
                                 [zero]) as h:
            resp = await h.exchange(get("/", close=True))
            assert resp.startswith(b"HTTP/1.1 500 ") and b"hm-proxy-error: no-backend" in resp
        await backends[0].stop()

    run(main())


def test_stale_pooled_connection_is_redone_transparently(tmp_path: Path) -> None:
    served = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Keep-alive in words, but closes right after the first answer (after a delay the
        proxy cannot see coming)."""
        nonlocal served
        await reader.readuntil(b"\r\n\r\n")
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    async def main() -> None:
        server, backend = await raw_backend(once)
        async with running_proxy(tmp_path, [web_service([backend], backend.port)]) as h:
            reader, writer = await h.open()
            for _ in range(3):
                writer.write(get("/"))
                assert (await asyncio.wait_for(read_response(reader), 5)).endswith(b"ok")
                await asyncio.sleep(0.1)  # the backend closed its side meanwhile
            writer.close()
            assert served == 3
        server.close()

    run(main())


def test_client_vanishing_mid_request_frees_the_upstream(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def hang(req: Request) -> Response:
        started.set()
        await asyncio.sleep(5)
        return Response.text("nobody listens\n")

    async def main() -> None:
        backends = await start_backends(1, hang)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            _reader, writer = await h.open()
            writer.write(get("/gone"))
            await asyncio.wait_for(started.wait(), 5)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # linger 0: a reset, not a polite FIN
            for _ in range(50):
                if h.metric("request_total", response_flags="DC") == 1:
                    break
                await asyncio.sleep(0.02)
            assert h.metric("request_total", response_flags="DC") == 1
            await asyncio.sleep(0.05)
            assert backends[0].connections == 0  # the upstream connection was closed
        await backends[0].stop()

    run(main())


def test_half_closed_client_still_gets_its_response(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            reader, writer = await h.open()
            writer.write(get("/half"))
            writer.write_eof()  # `printf 'GET ...' | nc` does this
            data = await asyncio.wait_for(reader.read(-1), 5)
            assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"ok GET /half 0\n")
            writer.close()
        await backends[0].stop()

    run(main())


def test_access_log_records_one_json_line_per_request(tmp_path: Path) -> None:
    stream = io.StringIO()

    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            h.worker.ctx.access_log = AccessLog(stream, flush_interval_s=0.01)
            await h.exchange(get("/logged?x=1", close=True,
                                 extra="User-Agent: hm-test\r\n"))
            h.worker.ctx.access_log.flush()
        await backends[0].stop()

    run(main())
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(records) == 1
    rec = records[0]
    assert rec["path"] == "/logged?x=1" and rec["response_code"] == 200
    assert rec["user_agent"] == "hm-test" and rec["authority"] == "web"
    assert rec["upstream_host"] == f"127.0.0.2:{rec['upstream_host'].split(':')[1]}"
    assert rec["reporter"] == "source" and rec["destination_workload"] == "web"


def test_http10_without_host_gets_one_upstream(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            resp = await h.exchange(b"GET /nohost HTTP/1.0\r\n\r\n")
            assert resp.startswith(b"HTTP/1.1 200 ") and resp.endswith(b"ok GET /nohost 0\n")
            assert backends[0].seen[0].headers["host"] == "web.default.svc.cluster.local:80"
        await backends[0].stop()

    run(main())
