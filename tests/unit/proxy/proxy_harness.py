"""A proxy worker on loopback for unprivileged tests (helpers; imported by name).

No iptables here: the worker's ``original_dst`` hook returns the destination the test says
the client "dialled" (a clusterIP such as 10.96.0.10:80), and backends listen on loopback
addresses 127.0.0.2, 127.0.0.3, ... which the snapshot lists as the service's endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from hybridmesh._http import HttpServer, Request, Response
from hybridmesh.proxy.config import ProxyConfig
from hybridmesh.proxy.testing import FakeControlPlane, endpoint, pod_snapshot, service
from hybridmesh.proxy.worker import Worker

VIP = "10.96.0.10"
POD = "default/client-0"

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Backend:
    """An HTTP backend on one loopback address that records what it received."""

    ip: str
    handler: Handler
    port: int = 0
    seen: list[Request] = field(default_factory=list)
    server: HttpServer | None = None

    async def start(self, port: int = 0) -> int:
        async def app(req: Request) -> Response:
            self.seen.append(req)
            return await self.handler(req)

        self.server = HttpServer(app)
        self.port = await self.server.start_tcp(self.ip, port)
        return self.port

    @property
    def connections(self) -> int:
        return self.server.connection_count if self.server else 0

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close(timeout=0.2)



def free_port(ip: str) -> int:
    """A port nobody listens on at ``ip`` right now (tests bind proxies and apps to it)."""
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def metric(worker: Worker, name: str, **labels: str) -> float:
    """The sum of a worker's series ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in worker.ctx.metrics.exposition().decode().splitlines():
        if line.startswith(name + "{"):
            key, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in key for k, v in labels.items()):
                total += float(value)
    return total

async def ok(req: Request) -> Response:
    return Response.text(f"ok {req.method} {req.path} {len(req.body)}\n")


async def start_backends(n: int, handler: Handler = ok) -> list[Backend]:
    """``n`` backends sharing one port on 127.0.0.2..n+1 (a service has one targetPort)."""
    return await start_group(*([handler] * n))


async def start_group(*handlers: Handler) -> list[Backend]:
    """One backend per handler, sharing a port on 127.0.0.2, 127.0.0.3, ..."""
    backends: list[Backend] = []
    port = 0
    for i, handler in enumerate(handlers):
        b = Backend(f"127.0.0.{2 + i}", handler)
        port = await b.start(port)
        backends.append(b)
    return backends


def web_service(backends: Iterable[Backend], port: int, app_protocol: str | None = None,
                name: str = "web") -> dict[str, Any]:
    eps = [endpoint(f"{name}-{i}", b.ip) for i, b in enumerate(backends)]
    ports = [(80, port, app_protocol)] if app_protocol else [(80, port)]
    return service(name, VIP, ports, eps)


@dataclass
class Harness:
    cp: FakeControlPlane
    worker: Worker
    orig: list[tuple[str, int]]

    @property
    def port(self) -> int:
        return self.worker.outbound_port

    def publish(self, services: Iterable[Mapping[str, Any]],
                routes: Iterable[Mapping[str, Any]] = ()) -> int:
        return self.cp.set(POD, pod_snapshot("client-0", "127.0.0.1", services, routes=routes))

    async def wait_version(self, version: int) -> None:
        async with asyncio.timeout(5):
            while self.worker.ctx.tables is None or self.worker.ctx.tables.version < version:
                await asyncio.sleep(0.005)

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def exchange(self, raw: bytes, *, read_until_close: bool = True) -> bytes:
        """Send raw bytes on a new connection; everything read until the proxy closes."""
        reader, writer = await self.open()
        writer.write(raw)
        try:
            async with asyncio.timeout(5):
                if read_until_close:
                    return await reader.read(-1)
                return await read_response(reader)
        finally:
            writer.close()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        total = 0.0
        for line in self.worker.ctx.metrics.exposition().decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                key, _, value = line.rpartition(" ")
                if all(f'{k}="{v}"' in key for k, v in labels.items()):
                    total += float(value)
        return total


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One Content-Length-framed response (the proxy's answers and our backends' are)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def get(path: str = "/", *, close: bool = False, extra: str = "") -> bytes:
    conn = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: web\r\n{conn}{extra}\r\n".encode()


@contextlib.asynccontextmanager
async def running_proxy(
    tmp_path: Path,
    services: Iterable[Mapping[str, Any]],
    routes: Iterable[Mapping[str, Any]] = (),
    *,
    orig: tuple[str, int] = (VIP, 80),
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """A worker watching a fake control plane, its outbound listener on 127.0.0.1."""
    cp = FakeControlPlane(tmp_path / "cp.sock")
    await cp.start()
    config = replace(
        ProxyConfig(namespace="default", pod="client-0", control_socket=str(tmp_path / "cp.sock"),
                    outbound_port=0, inbound_port=0, admin_port=0, bind_host="127.0.0.1",
                    mark=None, drain_grace_s=2.0, connect_timeout_s=0.5),
        **overrides,
    )
    dialled = [orig]
    worker = Worker(config, original_dst=lambda _sock, _direction: dialled[0])
    harness = Harness(cp, worker, dialled)
    harness.publish(services, routes)
    await worker.start()
    try:
        await worker.wait_ready(5)
        yield harness
    finally:
        await worker.close()
        await cp.close()


class H2App(asyncio.Protocol):
    """A tiny h2c (prior knowledge) app: answers ``h2 <method> <path> <body length>`` and,
    for ``content-type: application/grpc`` requests, ends with ``grpc-status: 0`` trailers."""

    seen: ClassVar[list[tuple[bytes, bytes, Headers]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        from hybridmesh.proxy.protocols.http2 import H2Server

        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.conn = H2Server()
        self.requests: dict[int, tuple[Any, bytearray]] = {}
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        from hybridmesh.proxy.protocols.http2 import Data, RequestHeaders, Trailers

        for ev in self.conn.receive_data(data):
            if isinstance(ev, RequestHeaders):
                self.requests[ev.stream_id] = (ev, bytearray())
                H2App.seen.append((ev.method, ev.path, ev.headers))
                if ev.end_stream:
                    self._answer(ev.stream_id)
            elif isinstance(ev, Data):
                self.requests[ev.stream_id][1].extend(ev.data)
                self.conn.acknowledge_received(ev.stream_id, ev.flow_controlled_length)
                if ev.end_stream:
                    self._answer(ev.stream_id)
            elif isinstance(ev, Trailers):
                self._answer(ev.stream_id)
        self.transport.write(self.conn.data_to_send())

    def _answer(self, sid: int) -> None:
        head, body = self.requests.pop(sid)
        grpc = (b"content-type", b"application/grpc") in head.headers
        text = b"h2 %s %s %d" % (head.method, head.path, len(body))
        self.conn.send_response(sid, 200, [(b"content-type", b"text/plain")])
        self.conn.send_data(sid, text, end_stream=not grpc)
        if grpc:
            self.conn.send_trailers(sid, [(b"grpc-status", b"0")])


Headers = tuple[tuple[bytes, bytes], ...]


async def start_h2_app(ip: str = "127.0.0.2") -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.get_running_loop().create_server(H2App, ip, 0)
    return server, server.sockets[0].getsockname()[1]
