"""httpsvc's connection protocol in-process: ordering of mixed fast/slow answers, bad input."""

from __future__ import annotations

import asyncio

from hybridmesh.lab.workloads._identity import PodIdentity
from hybridmesh.lab.workloads.httpsvc import Service, ServiceConfig

IDENTITY = PodIdentity("svc", "svc-0", "default", "")


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def run(config: ServiceConfig, data: bytes) -> tuple[bytes, Service]:
    async def main() -> tuple[bytes, Service]:
        service = Service(config, IDENTITY)
        port = await service.start()
        try:
            return await exchange(port, data), service
        finally:
            await service.shutdown(grace=5)

    return asyncio.run(main())


def test_pipelined_slow_then_fast_answers_stay_in_order() -> None:
    config = ServiceConfig(port=0, host="127.0.0.1", latency_ms=100, response_size=3)
    data = (
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    out, service = run(config, data)
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in out.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"xxx", b"ok\n", b"xxx"]
    assert service.served == 3


def test_malformed_gets_400_and_close_after_pending_answers() -> None:
    config = ServiceConfig(port=0, host="127.0.0.1", response_size=2)
    out, _ = run(config, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBROKEN\x00 / HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"HTTP/1.1 400 Bad Request\r\n" in out
    assert out.endswith(b"malformed request\n")


def test_http10_request_gets_connection_close() -> None:
    config = ServiceConfig(port=0, host="127.0.0.1", response_size=0)
    out, _ = run(config, b"GET / HTTP/1.0\r\n\r\n")
    assert b"Connection: close\r\n" in out
    assert out.count(b"HTTP/1.1 200") == 1
