"""gRPC/h2 clients that go away mid-call leave nothing behind in the proxies.

Client → proxy A (outbound) → proxy B (inbound on 127.0.0.3) → an h2 app that holds calls
until told to answer. Clients reset calls (RST_STREAM), say GOAWAY, half-close (h2load's way
out) or drop the connection; afterwards neither proxy may keep a client connection, a stream
object of ours, or a stream in its pooled upstream connection (ours or h2's table). Checked by
counting live objects, not by timing: waits are for an observable event (the app saw the
reset, the proxy closed the socket), bounded only as a failure guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import ClassVar

import pytest
import uvloop
from proxy_harness import Harness
from test_proxy_http2 import two_proxies

from hybridmesh.proxy.h2session import H2Session, H2Stream
from hybridmesh.proxy.h2upstream import H2Connection, H2UpstreamStream
from hybridmesh.proxy.protocols.http2 import (
    Data,
    H2Client,
    H2ErrorCode,
    H2Server,
    RequestHeaders,
    StreamReset,
    Trailers,
)
from hybridmesh.proxy.worker import Worker

CALLS = 4
GRPC_MESSAGE = b"\x00\x00\x00\x00\x05hello"


class HoldApp(asyncio.Protocol):
    """An h2c gRPC-shaped app that answers a call only when :meth:`answer` is called."""

    apps: ClassVar[list[HoldApp]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.conn = H2Server()
        self.calls: list[int] = []  # complete requests, in arrival order
        self.resets: list[int] = []
        self.transport.write(self.conn.data_to_send())
        HoldApp.apps.append(self)

    def data_received(self, data: bytes) -> None:
        for ev in self.conn.receive_data(data):
            if isinstance(ev, RequestHeaders) and ev.end_stream:
                self.calls.append(ev.stream_id)
            elif isinstance(ev, Data):
                self.conn.acknowledge_received(ev.stream_id, ev.flow_controlled_length)
                if ev.end_stream:
                    self.calls.append(ev.stream_id)
            elif isinstance(ev, StreamReset):
                self.resets.append(ev.stream_id)
        self.transport.write(self.conn.data_to_send())

    def answer(self, sid: int) -> None:
        self.conn.send_response(sid, 200, [(b"content-type", b"application/grpc")])
        self.conn.send_data(sid, GRPC_MESSAGE)
        self.conn.send_trailers(sid, [(b"grpc-status", b"0")])
        self.transport.write(self.conn.data_to_send())


def calls() -> list[int]:
    return [sid for app in HoldApp.apps for sid in app.calls]


def resets() -> list[int]:
    return [sid for app in HoldApp.apps for sid in app.resets]


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait for an event the test can observe; the timeout only guards against a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class GrpcClient:
    """A raw h2c client: unary gRPC-shaped calls it can abandon in every way."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = H2Client()
        self.finished: list[int] = []
        self.eof = False
        self.half_closed = False

    @classmethod
    async def connect(cls, port: int) -> GrpcClient:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        client.writer.write(client.conn.data_to_send())
        return client

    def call(self) -> int:
        sid = self.conn.send_request(b"POST", b"http", b"web", b"/svc.Echo/Say", headers=[
            (b"content-type", b"application/grpc"), (b"te", b"trailers")])
        self.conn.send_data(sid, GRPC_MESSAGE, end_stream=True)
        self.writer.write(self.conn.data_to_send())
        return sid

    async def read_until(self, cond: Callable[[], bool], what: str) -> None:
        while not cond():
            assert not self.eof, f"the proxy closed before {what}"
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            self.eof = not data
            for ev in self.conn.receive_data(data):
                if isinstance(ev, Trailers):
                    self.finished.append(ev.stream_id)
            out = self.conn.data_to_send()
            if out and not self.half_closed:
                self.writer.write(out)

    def half_close(self) -> None:
        self.half_closed = True
        self.writer.write_eof()


@contextlib.asynccontextmanager
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[Harness, Worker]]:
    """Proxy A (outbound, the harness) → proxy B (inbound) → the HoldApp on 127.0.0.2."""
    HoldApp.apps.clear()
    app = await asyncio.get_running_loop().create_server(HoldApp, "127.0.0.2", 0)
    app_port = app.sockets[0].getsockname()[1]
    try:
        async with two_proxies(tmp_path, app_port, upgrade=False, app_protocol="grpc") as pair:
            yield pair
    finally:
        app.close()


def upstreams(worker: Worker) -> list[H2Connection]:
    return [o for o in gc.get_objects() if type(o) is H2Connection and o.pool is worker.ctx.h2pool]


def client_sessions(worker: Worker) -> list[H2Session]:
    return [c for c in worker.ctx.connections if isinstance(c, H2Session)]


def assert_nothing_left(a: Harness, b: Worker) -> None:
    """No client session at A, B keeps only A's pooled connection, no stream anywhere."""
    assert client_sessions(a.worker) == []
    assert len(client_sessions(b)) == 1  # A's pooled connection to B, idle
    for session in client_sessions(b):
        assert session.streams == {} and session.conn.active_streams == 0
        assert session.conn._conn.streams == {}  # h2's table too (pruned as they close)
    conns = upstreams(a.worker) + upstreams(b)
    assert len(conns) == 2  # A → B and B → app, both kept for reuse
    for conn in conns:
        assert conn.streams == {} and conn.client.active_streams == 0
        assert conn.client._conn.streams == {}
    gc.collect()
    ours = [o for o in gc.get_objects() if type(o) in (H2Stream, H2UpstreamStream)]
    assert ours == []


async def open_calls(a: Harness) -> GrpcClient:
    before = len(calls())
    client = await GrpcClient.connect(a.port)
    for _ in range(CALLS):
        client.call()
    await until(lambda: len(calls()) == before + CALLS, "the app to hold every call")
    return client


@pytest.mark.parametrize("goodbye", ["goaway+eof", "eof", "goaway"])
def test_client_done_after_answers_and_resets_is_closed(tmp_path: Path, goodbye: str) -> None:
    """h2load's way out: some calls answered, the rest reset, then GOAWAY and/or a
    half-close. The proxy closes the connection (before: it stayed open for good, with
    its h2 state, as nothing reads or writes it any more)."""
    async def main() -> None:
        async with mesh(tmp_path) as (a, b):
            client = await open_calls(a)
            app = HoldApp.apps[0]
            for sid in app.calls[:2]:
                app.answer(sid)
            await client.read_until(lambda: len(client.finished) == 2, "two answers")
            for sid in set(client.conn._streams):
                client.conn.reset(sid, H2ErrorCode.CANCEL)
            client.writer.write(client.conn.data_to_send())
            await until(lambda: len(resets()) == CALLS - 2, "the resets to reach the app")
            if "goaway" in goodbye:
                client.conn.goaway()
                client.writer.write(client.conn.data_to_send())
            if "eof" in goodbye:
                client.half_close()
            await client.read_until(lambda: client.eof, "the proxy closing")
            client.writer.close()
            await until(lambda: not client_sessions(a.worker), "A to forget the session")
            assert_nothing_left(a, b)

    uvloop.run(main())


def test_client_lost_mid_call_cancels_the_upstream_streams(tmp_path: Path) -> None:
    """Calls in flight when the client's connection drops are cancelled hop by hop up to
    the app, and every stream is dropped from the pooled connections."""
    async def main() -> None:
        async with mesh(tmp_path) as (a, b):
            client = await open_calls(a)
            client.writer.transport.abort()
            await until(lambda: len(resets()) == CALLS, "the cancels to reach the app")
            await until(lambda: not client_sessions(a.worker), "A to forget the session")
            assert_nothing_left(a, b)
            second = await open_calls(a)  # the pooled connections still carry calls
            for sid in HoldApp.apps[0].calls[CALLS:]:
                HoldApp.apps[0].answer(sid)
            await second.read_until(lambda: len(second.finished) == CALLS, "the answers")
            second.writer.close()

    uvloop.run(main())
