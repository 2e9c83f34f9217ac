"""Frames the proxy puts on the wire for HTTP/2, checked with a bare h2 client: a body read
whole with its end leaves as one DATA frame carrying END_STREAM (not DATA plus an empty
DATA), and the responses of one read leave together."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import uvloop
from proxy_harness import VIP, H2App, running_proxy, start_backends

from hybridmesh.proxy.testing import endpoint, service


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


async def exchange(port: int, n: int, body: bytes, frames: list[tuple[int, int, bool]] | None = None
                   ) -> list[h2.events.Event]:
    """``n`` requests on one h2c connection, all sent at once (GETs when ``body`` is empty,
    else POSTs); every event until all ended (and the frames received, into ``frames``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding=None))
    conn.initiate_connection()
    for i in range(n):
        sid = conn.get_next_available_stream_id()
        head = [(b":method", b"POST" if body else b"GET"), (b":scheme", b"http"),
                (b":authority", b"web"), (b":path", b"/%d" % i)]
        if body:
            conn.send_headers(sid, [*head, (b"content-length", b"%d" % len(body))])
            conn.send_data(sid, body, end_stream=True)
        else:
            conn.send_headers(sid, head, end_stream=True)
    writer.write(conn.data_to_send())
    events: list[h2.events.Event] = []
    ended, rest = 0, b""
    async with asyncio.timeout(5):
        while ended < n:
            data = await reader.read(65536)
            assert data, "the proxy closed the connection"
            rest = _frames(rest + data, frames if frames is not None else [])
            for ev in conn.receive_data(data):
                events.append(ev)
                if isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                ended += isinstance(ev, h2.events.StreamEnded)
            writer.write(conn.data_to_send())
    writer.close()
    return events


def test_a_whole_http1_response_is_one_data_frame_with_end_stream(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        web = service("web", VIP, [(80, backends[0].port, "http")],  # HTTP/1.1 upstream
                      [endpoint("web-0", "127.0.0.2")])
        frames: list[tuple[int, int, bool]] = []
        async with running_proxy(tmp_path, [web]) as h:
            events = await exchange(h.port, 8, b"x" * 100, frames)
        for b in backends:
            await b.stop()
        assert sum(isinstance(ev, h2.events.StreamEnded) for ev in events) == 8
        statuses = [ev.headers[0] for ev in events if isinstance(ev, h2.events.ResponseReceived)]
        assert statuses == [(b":status", b"200")] * 8
        data = [(length > 0, end) for kind, length, end in frames if kind == 0]
        assert data == [(True, True)] * 8, data

    run(main())


def test_a_whole_request_body_reaches_an_h2_app_as_one_frame(tmp_path: Path) -> None:
    frames: list[tuple[int, int, bool]] = []

    class Counting(H2App):
        buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            self.buffer = _frames(self.buffer, frames)
            super().data_received(data)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Counting, "127.0.0.2", 0)
        port = server.sockets[0].getsockname()[1]
        web = service("web", VIP, [(80, port, "grpc")], [endpoint("web-0", "127.0.0.2")])
        async with running_proxy(tmp_path, [web]) as h:
            events = await exchange(h.port, 4, b"y" * 50)
        server.close()
        assert sum(isinstance(ev, h2.events.StreamEnded) for ev in events) == 4
        statuses = [ev.headers[0] for ev in events if isinstance(ev, h2.events.ResponseReceived)]
        assert statuses == [(b":status", b"200")] * 4
        data = [(length, end) for kind, length, end in frames if kind == 0]
        assert data == [(50, True)] * 4, data

    run(main())


def _frames(data: bytes, out: list[tuple[int, int, bool]]) -> bytes:
    """Append (type, length, END_STREAM) of each whole frame in ``data`` to ``out``; returns
    the incomplete rest (the client preface is skipped)."""
    if data.startswith(b"PRI * HTTP/2.0"):  # the client preface
        data = data[24:]
    pos = 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        if pos + 9 + length > len(data):
            break
        out.append((data[pos + 3], length, bool(data[pos + 4] & 1)))
        pos += 9 + length
    return data[pos:]
