"""Whatever bytes arrive, the server protocol answers with HTTP or stays silent: never raises."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridmesh._http import HttpServer, Request, Response, Router
from hybridmesh._http.server import _Connection


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def make_server() -> HttpServer:
    router = Router()

    @router.route("POST", "/echo")
    async def echo(req: Request, params: dict[str, str]) -> Response:
        return Response(200, {}, req.body)

    return HttpServer(router, max_head_bytes=512, max_body_bytes=256)


VALID = [
    b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
]


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    parts = draw(
        st.lists(st.one_of(st.sampled_from(VALID), st.binary(max_size=64)), min_size=1, max_size=6)
    )
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(streams())
def test_any_input_gets_http_or_nothing(chunks: list[bytes]) -> None:
    loop_errors: list[dict[str, Any]] = []

    async def main() -> FakeTransport:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        server = make_server()
        conn = _Connection(server)
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        for chunk in chunks:
            if transport.closed:
                break
            conn.data_received(chunk)
            await asyncio.sleep(0)
        for _ in range(20):
            await asyncio.sleep(0)
        await server.close(timeout=1)
        return transport

    transport = asyncio.run(main())
    assert loop_errors == []
    out = bytes(transport.written)
    assert out == b"" or out.startswith(b"HTTP/1.1 ")
    for status_line in out.split(b"HTTP/1.1 ")[1:]:
        assert status_line[:3] in (b"200", b"400", b"404", b"405", b"413", b"431")
