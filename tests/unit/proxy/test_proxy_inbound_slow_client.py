"""Inbound detection with a client slower than the window: still HTTP, still counted.

Found by the bench (``http-latency``, ``sidecar-plaintext``, on a loaded machine): the
server-side proxy "carried only 46-88 %" of the requests. A client proxy kept off the CPU for
longer than the 20 ms window between its connect and its first request made the inbound
listener relay that connection as opaque TCP — for its whole keep-alive life: no request
metrics and no L7 policy. Inbound the app is connected during detection (preconnect.py), so
only the app's own first bytes (a server-first protocol) may end detection as opaque.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import uvloop
from proxy_harness import (
    Harness,
    free_port,
    get,
    metric,
    read_response,
    running_proxy,
    start_backends,
    start_h2_app,
)
from test_proxy_h2_inbound_detect import grpc_call

from hybridmesh.proxy.testing import endpoint, pod_snapshot, service
from hybridmesh.proxy.worker import Worker

POD_IP = "127.0.0.3"
WINDOW_S = 0.02


async def _inbound(h: Harness, port: int, app_port: int) -> Worker:
    """web-0's proxy (inbound only, 20 ms window) in front of an app on 127.0.0.2."""
    config = replace(h.worker.config, pod="web-0", bind_host=POD_IP, inbound_port=port,
                     outbound_port=0, detect_timeout_s=WINDOW_S)
    server = Worker(config, original_dst=lambda _s, _d: ("127.0.0.2", app_port))
    await server.start()
    await server.wait_ready(5)
    return server


def test_http_client_silent_for_5x_the_window_is_still_http(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        port = free_port(POD_IP)
        services = [service("web", "10.96.0.10", [(80, port)], [endpoint("web-0", POD_IP)])]
        async with running_proxy(tmp_path, services) as h:
            h.cp.set("default/web-0", pod_snapshot("web-0", POD_IP, services))
            server = await _inbound(h, port, backends[0].port)
            try:
                reader, writer = await asyncio.open_connection(POD_IP, port)
                await asyncio.sleep(5 * WINDOW_S)  # a client proxy off the CPU, or dialled ahead
                for path in ("/late", "/again"):
                    writer.write(get(path))
                    resp = await asyncio.wait_for(read_response(reader), 5)
                    assert resp.startswith(b"HTTP/1.1 200 "), resp
                writer.close()
                assert [r.path for r in backends[0].seen] == ["/late", "/again"]
                assert metric(server, "request_total", reporter="destination",
                              response_code="200") == 2
                assert metric(server, "tcp_open_total", reporter="destination") == 0
            finally:
                await server.close()
        await backends[0].stop()

    uvloop.run(main())


def test_server_first_app_still_answers_at_once(tmp_path: Path) -> None:
    """The app's banner ends detection as opaque without waiting for anything."""
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hm-smtp ready\r\n")
        await writer.drain()
        await reader.read(100)
        writer.close()

    async def main() -> None:
        app = await asyncio.start_server(banner, "127.0.0.2", 0)
        app_port = app.sockets[0].getsockname()[1]
        port = free_port(POD_IP)
        services = [service("smtp", "10.96.0.11", [(25, port)], [endpoint("web-0", POD_IP)])]
        async with running_proxy(tmp_path, services) as h:
            h.cp.set("default/web-0", pod_snapshot("web-0", POD_IP, services))
            server = await _inbound(h, port, app_port)
            try:
                started = time.monotonic()
                reader, writer = await asyncio.open_connection(POD_IP, port)
                line = await asyncio.wait_for(reader.readline(), 5)
                elapsed = time.monotonic() - started
                assert line == b"220 hm-smtp ready\r\n"
                assert elapsed < 1.0  # the banner decides at once: nobody waits for a client
                writer.close()
            finally:
                await server.close()
        app.close()

    uvloop.run(main())


def test_grpc_client_silent_past_the_window_while_the_app_greets_is_still_grpc(
        tmp_path: Path) -> None:
    """An h2 app's SETTINGS on accept does not settle anything: the late client decides."""

    async def main() -> None:
        app, app_port = await start_h2_app()
        port = free_port(POD_IP)
        services = [service("grpc", "10.96.0.12", [(50051, port, "grpc")],
                            [endpoint("web-0", POD_IP)])]
        async with running_proxy(tmp_path, services) as h:
            h.cp.set("default/web-0", pod_snapshot("web-0", POD_IP, services))
            server = await _inbound(h, port, app_port)
            try:
                status, body = await grpc_call(port, delay_s=5 * WINDOW_S)
                assert (status, body) == (200, b"h2 POST /hm.Echo/Unary 7")
                assert metric(server, "request_total", reporter="destination",
                              request_protocol="grpc") == 1
            finally:
                await server.close()
        app.close()

    uvloop.run(main())
