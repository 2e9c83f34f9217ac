"""Micro-benchmark of the HTTP/1 cores: parse + re-serialize, as the proxy does per request.

Run ``python -m hybridmesh.proxy.protocols._bench_http1 [--seconds S]``. Not a test: the
figures depend on the machine. Each case reuses one reader (a keep-alive connection), feeds a
whole message per read and drains events; "slow path" disables llhttp to show what it buys.
The budget this serves: one proxy worker should beat Envoy's ~10k req/s on 2 cores, i.e.
well under 100 µs per request for everything; these cores should take a few µs of it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import httptools

from hybridmesh.proxy.protocols.http1 import (
    NEED_DATA,
    Data,
    EndOfMessage,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    frame_data,
    frame_end,
    response_framing,
    serialize_request,
    serialize_response,
)

__all__ = ["GET_300", "RESPONSE_1K", "main"]

GET_300 = (
    b"GET /api/v1/items?id=12345&sort=desc HTTP/1.1\r\n"
    b"Host: web.shop.svc.cluster.local:8080\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) curl/8.4.0\r\n"
    b"Accept: application/json, text/plain, */*\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"X-Request-Id: 0b5f2c7e-1d2a-4c1b-9e8f-123456789abc\r\n"
    b"Connection: keep-alive\r\n\r\n"
)
_BODY = b'{"items": [' + b'{"id": 1, "name": "widget"}, ' * 30 + b"]}"
RESPONSE_1K = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: app\r\n"
    b"Content-Length: %d\r\n\r\n%b" % (len(_BODY), _BODY)
)


def _relay_request(reader: RequestReader) -> int:
    """Parse one GET and serialize it for an upstream; returns bytes written."""
    reader.receive_data(GET_300)
    out = 0
    while (event := reader.next_event()) is not NEED_DATA:
        if isinstance(event, Request):
            out += len(serialize_request(event))
    return out


def _relay_response(reader: ResponseReader) -> int:
    """Parse one 1 KiB response and serialize it for the client; returns bytes written."""
    reader.expect(b"GET")
    reader.receive_data(RESPONSE_1K)
    framing = None
    out = 0
    while (event := reader.next_event()) is not NEED_DATA:
        if isinstance(event, Response):
            framing = response_framing(event, b"GET", b"1.1")
            out += len(serialize_response(event))
        elif isinstance(event, Data) and framing is not None:
            out += len(frame_data(framing, event.data))
        elif isinstance(event, EndOfMessage) and framing is not None:
            out += len(frame_end(framing, event.trailers))
    return out


def _llhttp_only() -> Callable[[], object]:
    """Baseline: httptools tokenizing the same GET with no checks and no events."""

    class Sink:
        def on_header(self, name: bytes, value: bytes) -> None:
            pass

    parser = httptools.HttpRequestParser(Sink())
    return lambda: parser.feed_data(GET_300)


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Best-of-5 calls per CPU-second of ``fn`` (CPU time, so that other work on a shared
    machine does not skew it; the cores are single-threaded and never wait)."""
    n = 1000
    while True:  # calibrate n so one round lasts about seconds/5
        start = time.process_time()
        for _ in range(n):
            fn()
        elapsed = time.process_time() - start
        if elapsed > seconds / 5 or n > 10_000_000:
            break
        n *= 2
    best = elapsed
    for _ in range(4):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - start)
    return n / best


def main(argv: list[str] | None = None) -> None:
    """Print calls/s and µs/call for each case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per case")
    args = parser.parse_args(argv)
    fast_req, slow_req = RequestReader(), RequestReader(fast_path=False)
    fast_resp, slow_resp = ResponseReader(), ResponseReader(fast_path=False)
    cases: list[tuple[str, Callable[[], object]]] = [
        (f"request  {len(GET_300)} B GET, parse+serialize", lambda: _relay_request(fast_req)),
        ("request  same, slow path (no llhttp)", lambda: _relay_request(slow_req)),
        (f"response {len(RESPONSE_1K)} B, parse+serialize", lambda: _relay_response(fast_resp)),
        ("response same, slow path (no llhttp)", lambda: _relay_response(slow_resp)),
        ("both     request + response relay", lambda: (
            _relay_request(fast_req), _relay_response(fast_resp))),
        ("baseline httptools tokenize GET only", _llhttp_only()),
    ]
    for name, fn in cases:
        rate = _rate(fn, args.seconds)
        print(f"{name:44s} {rate:>12,.0f} /s  {1e6 / rate:7.2f} µs")


if __name__ == "__main__":
    main()
