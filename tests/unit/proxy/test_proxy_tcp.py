"""Opaque TCP through the proxy: detection window, server-first banners, half-close, bulk data."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from proxy_harness import VIP, running_proxy

from hybridmesh.proxy.testing import endpoint, service


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


async def echo_upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo upper-cased until EOF, then say bye and close (exercises half-close)."""
    while data := await reader.read(65536):
        writer.write(data.upper())
    writer.write(b"BYE")
    await writer.drain()
    writer.close()


async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 hm-smtp ready\r\n")
    await writer.drain()
    await reader.read(100)
    writer.close()


async def sink_digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    digest = hashlib.sha256()
    while data := await reader.read(1 << 16):
        digest.update(data)
    writer.write(digest.hexdigest().encode())
    await writer.drain()
    writer.close()


async def serve(handler: Any) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.2", 0)
    return server, server.sockets[0].getsockname()[1]


def tcp_service(port: int, app_protocol: str | None = None) -> dict[str, Any]:
    ports = [(80, port, app_protocol)] if app_protocol else [(80, port)]
    return service("db", VIP, ports, [endpoint("db-0", "127.0.0.2")])


def test_opaque_bytes_are_relayed_with_half_close(tmp_path: Path) -> None:
    async def main() -> None:
        server, port = await serve(echo_upper)
        async with running_proxy(tmp_path, [tcp_service(port)]) as h:
            reader, writer = await h.open()
            writer.write(b"\x00\x01binary hello")
            writer.write_eof()
            data = await asyncio.wait_for(reader.read(-1), 5)
            assert data == b"\x00\x01BINARY HELLOBYE"
            writer.close()
            await asyncio.sleep(0.05)
            assert h.metric("tcp_open_total", destination_workload="db") == 1
            assert h.metric("tcp_close_total", destination_workload="db") == 1
            assert h.metric("tcp_read_bytes_total") == 14
            assert h.metric("tcp_write_bytes_total") == 17
        server.close()

    run(main())


@pytest.mark.parametrize(("app_protocol", "window_ms", "bound_ms"),
                         [(None, 20, 20 + 40), ("tcp", 500, 60)])
def test_server_speaks_first_is_not_stalled(tmp_path: Path, app_protocol: str | None,
                                            window_ms: int, bound_ms: int) -> None:
    async def main() -> None:
        server, port = await serve(banner)
        async with running_proxy(tmp_path, [tcp_service(port, app_protocol)],
                                 detect_timeout_s=window_ms / 1000) as h:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            reader, writer = await h.open()
            line = await asyncio.wait_for(reader.readline(), 5)
            elapsed_ms = (loop.time() - t0) * 1000
            assert line == b"220 hm-smtp ready\r\n"
            assert elapsed_ms < bound_ms, f"banner after {elapsed_ms:.1f} ms"
            if app_protocol is None:
                assert elapsed_ms >= window_ms * 0.9  # silent client: opaque after the window
            writer.close()
        server.close()

    run(main())


def test_bulk_transfer_is_intact_both_ways(tmp_path: Path) -> None:
    async def main() -> None:
        server, port = await serve(sink_digest)
        payload = bytes(range(256)) * (40 * 1024)  # 10 MiB
        async with running_proxy(tmp_path, [tcp_service(port, "tcp")]) as h:
            reader, writer = await h.open()
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(-1), 10)
            assert answer.decode() == hashlib.sha256(payload).hexdigest()
            writer.close()
        server.close()

    run(main())


def test_unreachable_upstream_resets_the_client(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_proxy(tmp_path, [tcp_service(1, "tcp")]) as h:
            reader, writer = await h.open()
            writer.write(b"anyone?")
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                data = await asyncio.wait_for(reader.read(-1), 5)
                if not data:
                    raise asyncio.IncompleteReadError(b"", None)
            writer.close()
            assert h.metric("proxy_errors_total", reason="connect-refused") == 1

    run(main())


def test_inbound_banner_ends_detection_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        server, port = await serve(banner)
        async with running_proxy(tmp_path, [], orig=("127.0.0.2", port),
                                 detect_timeout_s=0.5) as h:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            reader, writer = await asyncio.open_connection("127.0.0.1", h.worker.inbound_port)
            line = await asyncio.wait_for(reader.readline(), 5)
            assert line == b"220 hm-smtp ready\r\n"
            assert loop.time() - t0 < 0.1  # the app spoke first: no 500 ms window
            writer.write(b"QUIT\r\n")
            writer.close()
            await asyncio.sleep(0.05)
            assert h.metric("tcp_open_total", reporter="destination") == 1
        server.close()

    run(main())


def test_inbound_http_uses_the_preconnected_upstream(tmp_path: Path) -> None:
    from proxy_harness import get, read_response, start_backends

    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [], orig=("127.0.0.2", backends[0].port),
                                 detect_timeout_s=0.5) as h:
            reader, writer = await asyncio.open_connection("127.0.0.1", h.worker.inbound_port)
            await asyncio.sleep(0.05)  # the preconnect lands well within the window
            writer.write(get("/in"))
            resp = await asyncio.wait_for(read_response(reader), 5)
            assert resp.startswith(b"HTTP/1.1 200 ")
            writer.close()
            assert h.worker.ctx.pool.opened == 0  # the request used the early connection
            assert backends[0].connections == 1
            assert h.metric("request_total", reporter="destination", response_code="200",
                            destination_workload="client") == 1
        await backends[0].stop()

    run(main())
