"""Sessions on mesh TLS transports read through one shared buffer (``_tlsread``): they get
exact ``bytes`` per read, every connection its own data, and the transport events."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import uvloop
from mtls_harness import mesh_pair

from hybridmesh._http import Request, Response
from hybridmesh.proxy._tlsread import BUFFER_SIZE, TlsReader, read_buffered


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append(("made", transport))

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))

    def eof_received(self) -> bool:
        self.events.append(("eof", None))
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))

    def pause_writing(self) -> None:
        self.events.append(("pause", None))

    def resume_writing(self) -> None:
        self.events.append(("resume", None))


class _Transport(asyncio.Transport):
    def __init__(self, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


def _fill(reader: TlsReader, data: bytes) -> None:
    buf = reader.get_buffer(-1)
    buf[:len(data)] = data
    reader.buffer_updated(len(data))


def test_reads_arrive_as_exact_bytes_and_events_pass_through() -> None:
    inner = _Recorder()
    reader = TlsReader(inner)
    assert len(reader.get_buffer(-1)) == BUFFER_SIZE
    reader.connection_made(_Transport(reader))
    _fill(reader, b"first read")
    _fill(reader, b"2nd")  # the shared buffer is reused: the first copy must not change
    reader.pause_writing()
    reader.resume_writing()
    reader.eof_received()  # answers None (uvloop warns about True): the TLS link closes anyway
    reader.connection_lost(None)
    kinds = [kind for kind, _ in inner.events]
    assert kinds == ["made", "data", "data", "pause", "resume", "eof", "lost"]
    data = [value for kind, value in inner.events if kind == "data"]
    assert data == [b"first read", b"2nd"] and all(type(d) is bytes for d in data)


def test_read_buffered_wraps_plain_protocols_once() -> None:
    inner = _Recorder()
    transport = _Transport(inner)
    read_buffered(transport)
    wrapped = transport.get_protocol()
    assert isinstance(wrapped, TlsReader) and wrapped.protocol is inner
    read_buffered(transport)
    assert transport.get_protocol() is wrapped  # not wrapped twice

    class Own(asyncio.BufferedProtocol):
        def get_buffer(self, sizehint: int) -> bytearray:
            return bytearray(1)

        def buffer_updated(self, nbytes: int) -> None:
            return None

    own = Own()
    transport.set_protocol(own)
    read_buffered(transport)
    assert transport.get_protocol() is own  # a buffered session keeps its own buffer


async def _body(req: Request) -> Response:
    n = int(req.path.rsplit("/", 1)[1])
    return Response(200, {"content-type": "application/octet-stream"},
                    bytes([n]) * (150_000 + n))


def test_concurrent_mtls_sessions_each_get_their_own_bytes(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture,
                                                          ) -> None:
    """Large responses on eight connections at once through both proxies: the shared read
    buffer never mixes one connection's bytes into another's. Closing the pooled mTLS
    connections at the end logs no uvloop warning about eof_received."""

    async def one(p: Any, n: int) -> None:
        resp = await p.get(f"/big/{n}")
        head, _, body = resp.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert body == bytes([n]) * (150_000 + n)

    async def main() -> None:
        async with mesh_pair(tmp_path, handler=_body) as p:
            await asyncio.gather(*(one(p, n) for n in range(8)))
            transports = [t for t in (getattr(c, "transport", None)
                                      for c in p.server.ctx.connections) if t is not None]
            assert transports, "the server proxy keeps its keep-alive sessions"
            for transport in transports:
                assert isinstance(transport.get_protocol(), TlsReader)
            await p.server.close()  # the client proxy's pooled mTLS connections see EOF
            await asyncio.sleep(0.2)

    caplog.set_level(logging.WARNING, logger="asyncio")
    uvloop.run(main())
    assert not [r for r in caplog.records if "eof_received" in r.getMessage()]
