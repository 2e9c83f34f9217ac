"""The HTTP/1.1 path end to end on loopback: forwarding, keep-alive, bodies, proxy errors."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvloop
from proxy_harness import (
    VIP,
    Backend,
    get,
    ok,
    read_response,
    running_proxy,
    start_backends,
    web_service,
)

from hybridmesh._http import Request, Response
from hybridmesh.proxy.testing import service


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def test_get_is_forwarded_and_both_connections_stay_alive(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            reader, writer = await h.open()
            for i in range(3):
                writer.write(get(f"/r{i}"))
                resp = await read_response(reader)
                assert resp.startswith(b"HTTP/1.1 200 ")
                assert resp.endswith(f"ok GET /r{i} 0\n".encode())
                assert b"connection: close" not in resp.lower()
            writer.close()
            assert [r.path for r in backends[0].seen] == ["/r0", "/r1", "/r2"]
            assert h.worker.ctx.pool.opened == 1  # one upstream connection, reused
            assert h.metric("request_total", response_code="200", reporter="source",
                            destination_workload="web") == 3
        await backends[0].stop()

    run(main())


def test_bodies_are_forwarded_with_canonical_framing(tmp_path: Path) -> None:
    async def echo(req: Request) -> Response:
        return Response(201, {"X-Len": str(len(req.body))}, req.body[::-1])

    async def main() -> None:
        backends = await start_backends(1, echo)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            raw = (b"POST /p HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
            reader, writer = await h.open()
            writer.write(raw)
            resp = await read_response(reader)
            assert resp.startswith(b"HTTP/1.1 201 ")
            assert resp.endswith(b"gfedcba")
            assert backends[0].seen[0].body == b"abcdefg"
            big = b"x" * 300_000  # larger than the replay buffer: streamed
            writer.write(b"PUT /big HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n"
                         % len(big) + big)
            resp = await read_response(reader)
            assert b"x-len: 300000" in resp.lower() and resp.endswith(big)
            writer.close()
        await backends[0].stop()

    run(main())


def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            reader, writer = await h.open()
            writer.write(get("/a") + get("/b") + get("/c", close=True))
            data = await asyncio.wait_for(reader.read(-1), 5)
            assert data.count(b"HTTP/1.1 200") == 3
            assert data.index(b"GET /a") < data.index(b"GET /b") < data.index(b"GET /c")
            assert b"connection: close" in data.split(b"GET /b")[1].lower()
        await backends[0].stop()

    run(main())


def test_no_endpoints_is_a_503_naming_proxy_reason_and_destination(tmp_path: Path) -> None:
    async def main() -> None:
        empty = service("web", VIP, [(80, 8080)], [])
        async with running_proxy(tmp_path, [empty]) as h:
            resp = await h.exchange(get("/x"), read_until_close=False)
            head, body = resp.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 503 Service Unavailable")
            assert b"hm-proxy-error: no-endpoints" in head
            assert b"default/client-0" in body
            assert b"web.default.svc.cluster.local:80" in body
            assert h.metric("proxy_errors_total", reason="no-endpoints") == 1
            assert h.metric("request_total", response_code="503", response_flags="UH") == 1

    run(main())


def test_refused_connect_is_a_502_after_trying_each_endpoint(tmp_path: Path) -> None:
    async def main() -> None:
        dead = [Backend("127.0.0.2", ok), Backend("127.0.0.3", ok)]
        async with running_proxy(tmp_path, [web_service(dead, 1)]) as h:
            resp = await h.exchange(get("/x"), read_until_close=False)
            assert resp.startswith(b"HTTP/1.1 502 ")
            assert b"hm-proxy-error: connect-refused" in resp
            # default policy: 2 retries of connect failures, other endpoint first
            assert h.metric("retry_total") == 2

    run(main())


def test_route_request_timeout_is_a_504(tmp_path: Path) -> None:
    async def slow(req: Request) -> Response:
        await asyncio.sleep(2)
        return Response.text("late\n")

    async def main() -> None:
        backends = await start_backends(1, slow)
        route: dict[str, Any] = {
                 "name": "default/slow", "service": "default/web", "port": None, "hostnames": [],
                 "rules": [{"matches": [], "backends": [],
                            "timeouts": {"requestMs": 150, "backendRequestMs": None},
                            "retry": None}]}
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)],
                                 [route]) as h:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            resp = await h.exchange(get("/x"), read_until_close=False)
            assert 0.14 < loop.time() - t0 < 1.0
            assert resp.startswith(b"HTTP/1.1 504 ")
            assert b"hm-proxy-error: timeout" in resp
            assert h.metric("request_total", response_code="504", response_flags="UT") == 1
        await backends[0].stop()

    run(main())


def test_smuggling_attempt_is_refused_and_never_reaches_the_backend(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            raw = (b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 6\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n")
            resp = await h.exchange(raw)
            assert resp.startswith(b"HTTP/1.1 400 ")
            assert b"hm-proxy-error: bad-request" in resp
            assert b"content-length-and-transfer-encoding" in resp
            assert backends[0].seen == [] and h.worker.ctx.pool.opened == 0
        await backends[0].stop()

    run(main())


def test_oversized_head_gets_the_readers_status(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            resp = await h.exchange(get("/" + "a" * 9000))
            assert resp.startswith(b"HTTP/1.1 414 ")
            assert backends[0].seen == []
        await backends[0].stop()

    run(main())


def test_upstream_reset_mid_response_closes_client_and_proxy_keeps_serving(
    tmp_path: Path,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.2", 0)
        port = server.sockets[0].getsockname()[1]
        backend = Backend("127.0.0.2", ok, port)
        async with running_proxy(tmp_path, [web_service([backend], port)]) as h:
            resp = await h.exchange(get("/x"))
            assert resp.startswith(b"HTTP/1.1 200 ") and resp.endswith(b"partial")
            assert h.metric("request_total", response_flags="UC") == 1
            server.close()
            good = await start_backends(1)
            h.publish([web_service(good, good[0].port)])
            await h.wait_version(2)
            resp = await h.exchange(get("/y", close=True))
            assert resp.startswith(b"HTTP/1.1 200 ")
            await good[0].stop()

    run(main())


def test_passthrough_connects_to_the_original_destination(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [], orig=("127.0.0.2", backends[0].port)) as h:
            resp = await h.exchange(get("/direct", close=True))
            assert resp.startswith(b"HTTP/1.1 200 ") and resp.endswith(b"ok GET /direct 0\n")
            assert h.metric("request_total",
                            destination_service=f"127.0.0.2:{backends[0].port}") == 1
        await backends[0].stop()

    run(main())
