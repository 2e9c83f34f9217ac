"""Inbound detection against an HTTP/2 app that speaks first (gRPC servers do).

The inbound listener connects to the app while it sniffs the client (preconnect.py), and an
app that speaks first ends detection as opaque TCP at once (a server-first protocol: SMTP,
MySQL). An HTTP/2 server speaks first too: its connection preface is a SETTINGS frame sent on
accept (grpcio does, so does :class:`~proxy_harness.H2App`). When that SETTINGS frame won the
race against the peer proxy's own preface — a cross-node hop, a busy client proxy — the gRPC
connection was relayed as opaque TCP: no request counted by the server-side proxy, no L7
policy. Found by the bench (``grpc`` cross-node, ``sidecar-plaintext``: the server-side proxy
"carried 0 %" of the requests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvloop
from proxy_harness import free_port, metric, running_proxy, start_h2_app

from hybridmesh.proxy.protocols.http2 import Data, H2Client, ResponseHeaders, Trailers
from hybridmesh.proxy.testing import endpoint, pod_snapshot, service
from hybridmesh.proxy.worker import Worker

POD_IP = "127.0.0.3"


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


async def grpc_call(port: int, *, delay_s: float) -> tuple[int, bytes]:
    """A plaintext h2c unary call to the inbound listener whose preface leaves ``delay_s``
    after the connection is accepted (as a peer proxy's does on a slower path)."""
    reader, writer = await asyncio.open_connection(POD_IP, port)
    await asyncio.sleep(delay_s)
    client = H2Client()
    sid = client.send_request(b"POST", b"http", b"grpc:50051", b"/hm.Echo/Unary",
                              headers=[(b"content-type", b"application/grpc"),
                                       (b"te", b"trailers")])
    client.send_data(sid, b"\0\0\0\0\x02hi", end_stream=True)
    writer.write(client.data_to_send())
    status, body = 0, b""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, "the proxy closed the connection before the answer"
            for ev in client.receive_data(data):
                if isinstance(ev, ResponseHeaders):
                    status = ev.status
                elif isinstance(ev, Data):
                    body += ev.data
                elif isinstance(ev, Trailers):
                    return status, body
            writer.write(client.data_to_send())
    finally:
        writer.close()


def test_h2_app_speaking_first_does_not_make_grpc_opaque(tmp_path: Path) -> None:
    async def main() -> None:
        app, app_port = await start_h2_app()
        port = free_port(POD_IP)
        ports = [(50051, port, "grpc")]
        services = [service("grpc", "10.96.0.12", ports, [endpoint("grpc-0", POD_IP)])]
        async with running_proxy(tmp_path, services) as h:
            h.cp.set("default/grpc-0", pod_snapshot("grpc-0", POD_IP, services))
            config = replace(h.worker.config, pod="grpc-0", bind_host=POD_IP,
                             inbound_port=port, outbound_port=0, detect_timeout_s=1.0)
            server = Worker(config, original_dst=lambda _s, _d: ("127.0.0.2", app_port))
            await server.start()
            try:
                await server.wait_ready(5)
                # The app's SETTINGS reaches the proxy well before the client's preface.
                status, body = await grpc_call(port, delay_s=0.1)
                assert (status, body) == (200, b"h2 POST /hm.Echo/Unary 7")
                assert metric(server, "request_total", reporter="destination",
                              request_protocol="grpc", grpc_response_status="0") == 1
                assert metric(server, "tcp_open_total", reporter="destination") == 0
            finally:
                await server.close()
        app.close()

    run(main())
