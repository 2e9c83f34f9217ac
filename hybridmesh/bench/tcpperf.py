"""L4 workloads for the TCP scenarios: a server (echo + sink) and two clients (rr, stream).

    python3 -m hybridmesh.bench.tcpperf serve --rr-port 5001 --stream-port 5002
    python3 -m hybridmesh.bench.tcpperf rr --host tcp --port 5001 [--size 64] \\
        [--warmup 1] [--duration 10]
    python3 -m hybridmesh.bench.tcpperf stream --host tcp --port 5002 [--warmup 1] \\
        [--duration 10]

``rr`` is netperf TCP_RR's shape: one connection, one transaction in flight, blocking
sockets (no event loop between the syscalls), each round trip timed. ``stream`` writes
64 KiB chunks for the duration, the last one marked (its first byte is 1, every other
chunk's is 0); once the server has the whole marked chunk it answers with the byte count it
received, so the rate is what arrived, not what sat in socket buffers. The end is marked in
band rather than by a half-close because a proxy hop may not carry a half-close (TLS cannot:
close_notify ends both directions). Both print one JSON object on stdout. The warm-up of
``rr`` runs on the measured connection; ``stream`` warms up on a separate connection first
(its byte count has to start from zero).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from hybridmesh.lab.workloads._stats import Histogram

__all__ = ["main", "run_rr", "run_stream", "serve"]

CHUNK = 64 * 1024
LAST = 1  # first byte of the stream's last chunk; every other chunk starts with 0


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport: asyncio.Transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._transport.write(data)


class _Sink(asyncio.Protocol):
    """Counts bytes; answers ``<count>\\n`` once the marked last chunk is complete (or at EOF,
    for a client that half-closes instead), then closes."""

    def __init__(self) -> None:
        self._count = 0
        self._end: int | None = None  # byte count at which the marked chunk is complete
        self._answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        start = self._count
        self._count += len(data)
        if self._end is None:
            for offset in range(-start % CHUNK, len(data), CHUNK):  # chunk starts in ``data``
                if data[offset] == LAST:
                    self._end = start + offset + CHUNK
                    break
        if self._end is not None and self._count >= self._end:
            self._answer()

    def eof_received(self) -> bool:
        self._answer()
        return True

    def _answer(self) -> None:
        if not self._answered:
            self._answered = True
            self._transport.write(f"{self._count}\n".encode())
            self._transport.close()


async def serve(rr_port: int, stream_port: int, host: str = "0.0.0.0") -> None:
    """Serve both ports until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    echo = await loop.create_server(_Echo, host, rr_port, backlog=1024)
    sink = await loop.create_server(_Sink, host, stream_port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"tcpperf serving rr on {rr_port}, stream on {stream_port}", flush=True)
    await stop.wait()
    echo.close()
    sink.close()


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exact(sock: socket.socket, buf: bytearray) -> None:
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("the server closed the connection mid-transaction")
        got += n


def run_rr(host: str, port: int, size: int, warmup: float, duration: float) -> dict[str, Any]:
    """Ping-pong ``size`` bytes; latency of every measured transaction into a histogram."""
    message, answer = b"r" * size, bytearray(size)
    hist = Histogram()
    with _connect(host, port) as sock:
        warm_end, warm = time.perf_counter() + warmup, 0
        while time.perf_counter() < warm_end:
            sock.sendall(message)
            _recv_exact(sock, answer)
            warm += 1
        started = time.perf_counter_ns()
        end = started + int(duration * 1e9)
        done, now = 0, started
        while now < end:
            sock.sendall(message)
            _recv_exact(sock, answer)
            t = time.perf_counter_ns()
            hist.record((t - now) / 1000)
            now, done = t, done + 1
    seconds = (now - started) / 1e9
    return {
        "transactions": done,
        "warmup_transactions": warm,
        "seconds": round(seconds, 6),
        "tps": round(done / seconds, 2) if seconds else 0.0,
        "rtt_p50_us": hist.percentile(50),
        "rtt_p99_us": hist.percentile(99),
        "histogram": hist.to_json(),
    }


def _stream_once(host: str, port: int, duration: float) -> tuple[int, int, float]:
    """(bytes written, bytes the server acknowledged, seconds from connect to the ack)."""
    chunk = memoryview(b"\0" * CHUNK)
    last = memoryview(bytes([LAST]) + b"\0" * (CHUNK - 1))
    with _connect(host, port) as sock:
        sock.settimeout(None)
        started = time.perf_counter()
        end, sent = started + duration, 0
        while time.perf_counter() < end:
            sock.sendall(chunk)
            sent += CHUNK
        sock.sendall(last)
        sent += CHUNK
        reply = b""
        while not reply.endswith(b"\n"):
            part = sock.recv(64)
            if not part:
                raise ConnectionError("the server closed without acknowledging the bytes")
            reply += part
        elapsed = time.perf_counter() - started
    return sent, int(reply), elapsed


def run_stream(host: str, port: int, warmup: float, duration: float) -> dict[str, Any]:
    warm_bytes = _stream_once(host, port, warmup)[1] if warmup > 0 else 0
    sent, acked, seconds = _stream_once(host, port, duration)
    return {
        "bytes": acked,
        "sent_bytes": sent,
        "warmup_bytes": warm_bytes,
        "seconds": round(seconds, 6),
        "gbps": round(acked * 8 / seconds / 1e9, 4) if seconds else 0.0,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcpperf", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve", help="echo server (rr) and byte sink (stream)")
    s.add_argument("--rr-port", type=int, required=True)
    s.add_argument("--stream-port", type=int, required=True)
    s.add_argument("--host", default="0.0.0.0")
    for name in ("rr", "stream"):
        c = sub.add_parser(name, help=f"{name} client; prints one JSON object")
        c.add_argument("--host", required=True)
        c.add_argument("--port", type=int, required=True)
        c.add_argument("--warmup", type=float, default=1.0, help="seconds, discarded")
        c.add_argument("--duration", type=float, default=10.0, help="measured seconds")
        if name == "rr":
            c.add_argument("--size", type=int, default=64, help="bytes each way")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.mode == "serve":
        from hybridmesh._http import install_uvloop

        install_uvloop()
        asyncio.run(serve(args.rr_port, args.stream_port, args.host))
        return 0
    if args.duration <= 0 or args.warmup < 0 or (args.mode == "rr" and args.size < 1):
        print("tcpperf: --duration must be > 0, --warmup >= 0, --size >= 1", file=sys.stderr)
        return 2
    try:
        if args.mode == "rr":
            result = run_rr(args.host, args.port, args.size, args.warmup, args.duration)
        else:
            result = run_stream(args.host, args.port, args.warmup, args.duration)
    except OSError as exc:
        print(f"tcpperf {args.mode}: {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
