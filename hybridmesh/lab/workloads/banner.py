"""A server-speaks-first service (SMTP/MySQL-shaped) and a probe timing its banner.

    python3 -m hybridmesh.lab.workloads.banner serve --port 2525 [--host 0.0.0.0]
    python3 -m hybridmesh.lab.workloads.banner probe --target HOST:PORT [--count N]
        [--timeout S]

The server writes ``220 <pod> hm-banner ready`` the moment it accepts a connection, then
echoes every byte it receives. A client of such a protocol sends nothing until it has read the
banner, so a proxy sniffing the client's first bytes to detect the protocol must give up
quickly (the mesh's detection window) or the client waits forever: the probe measures exactly
that wait, connect start to banner received, per connection, then checks the echo so the
connection is known to carry bytes both ways afterwards. It prints one JSON document and exits
1 if any connection failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BannerServer", "ProbeReport", "main", "probe"]

_PING = b"PING hm-banner\r\n"


class BannerServer(asyncio.Protocol):
    """Banner on accept, then an echo."""

    def __init__(self, banner: bytes) -> None:
        self._banner = banner
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._banner)

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def eof_received(self) -> bool:
        return False  # close our side too


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    who = os.environ.get("POD_NAME", socket.gethostname())
    banner = f"220 {who} hm-banner ready\r\n".encode()
    server = await loop.create_server(lambda: BannerServer(banner), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"banner: serving on {host}:{port}", flush=True)
    async with server:
        await stop.wait()


@dataclass
class ProbeReport:
    """Connect-to-banner times in milliseconds, one per successful connection."""

    target: str
    times_ms: list[float] = field(default_factory=list)
    banner: str = ""
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        t = sorted(self.times_ms)
        return {
            "target": self.target,
            "ok": not self.failures and bool(t),
            "count": len(t),
            "banner": self.banner,
            "timesMs": [round(x, 3) for x in self.times_ms],
            "minMs": round(t[0], 3) if t else None,
            "medianMs": round(statistics.median(t), 3) if t else None,
            "maxMs": round(t[-1], 3) if t else None,
            "failures": self.failures,
        }


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def _one(host: str, port: int, timeout: float) -> tuple[float, bytes]:
    """(ms from connect start to the whole banner line, the banner); echo checked after."""
    started = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        banner = _read_line(sock)
        elapsed = (time.perf_counter() - started) * 1000
        sock.sendall(_PING)
        echoed = _read_line(sock)
        if echoed != _PING:
            raise ConnectionError(f"echo mismatch: {echoed!r}")
    return elapsed, banner


def probe(target: str, count: int, timeout: float = 5.0) -> ProbeReport:
    """``count`` sequential connections to ``target`` (HOST:PORT)."""
    host, _, port = target.rpartition(":")
    report = ProbeReport(target=target)
    for _ in range(count):
        try:
            ms, banner = _one(host, int(port), timeout)
        except OSError as exc:  # ConnectionError and socket.timeout are OSErrors
            report.failures.append(f"{type(exc).__name__}: {exc}")
            continue
        report.times_ms.append(ms)
        report.banner = banner.decode("latin-1").strip()
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="banner", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the banner + echo")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--host", default="0.0.0.0", help="address to bind (default: all)")
    c = sub.add_parser("probe", help="time connect-to-banner and print a JSON report")
    c.add_argument("--target", required=True, metavar="HOST:PORT")
    c.add_argument("--count", type=int, default=10, metavar="N")
    c.add_argument("--timeout", type=float, default=5.0, metavar="S")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.command == "serve":
        if not 0 < args.port < 65536:
            p.error("--port must be 1..65535")
        asyncio.run(_serve(args.host, args.port))
        return 0
    host, sep, port = args.target.rpartition(":")
    if not sep or not host or not port.isdigit() or args.count < 1 or args.timeout <= 0:
        p.error("--target must be HOST:PORT, --count >= 1, --timeout > 0")
    report = probe(args.target, args.count, args.timeout)
    doc = report.to_json()
    print(json.dumps(doc))
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
