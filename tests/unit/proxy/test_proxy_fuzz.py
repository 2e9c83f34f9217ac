"""Garbage in through a live worker: every byte stream gets an HTTP answer, a relay or a close —
never an internal error, a logged traceback or a dead worker."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_harness import get, running_proxy, start_backends, web_service

VALID = (b"POST /p?q=1 HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n"
         b"Transfer-Encoding: chunked\r\nX-A: b\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


@st.composite
def mangled(draw: st.DrawFn) -> list[bytes]:
    """A valid request with bytes flipped, cut or inserted, sent in random pieces."""
    data = bytearray(VALID if draw(st.booleans()) else get("/x"))
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i: i + draw(st.integers(1, 8))]
        else:
            data[i:i] = draw(st.sampled_from([b"\r\n", b"\n", b" ", b"\x00", b":", b"0",
                                              b"Content-Length: 3\r\n"]))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    bounds = [0, *cuts, len(data)]
    return [bytes(data[a:b]) for a, b in itertools.pairwise(bounds)]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pieces=mangled())
def test_mangled_requests_never_break_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, pieces: list[bytes]
) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)],
                                 detect_timeout_s=0.005) as h:
            reader, writer = await h.open()
            answer = b""
            try:  # the proxy may close (and reset) a connection whose request it refused
                for piece in pieces:
                    writer.write(piece)
                    await asyncio.sleep(0)
                if not writer.is_closing():
                    writer.write_eof()
                answer = await asyncio.wait_for(reader.read(-1), 5)
            except (ConnectionError, RuntimeError):
                answer = bytes(getattr(reader, "_buffer", b""))  # read before the reset
            writer.close()
            if answer:  # HTTP for HTTP; an opaque relay echoes the backend's own answer
                assert answer.startswith(b"HTTP/1.1 "), answer[:80]
                assert b"hm-proxy-error: internal" not in answer
            again = await h.exchange(get("/alive", close=True))
            assert again.startswith(b"HTTP/1.1 200 ")
        await backends[0].stop()

    with caplog.at_level(logging.ERROR, logger="hybridmesh.proxy"):
        uvloop.run(main())
    assert not [r for r in caplog.records if r.name.startswith("hybridmesh.proxy")]
