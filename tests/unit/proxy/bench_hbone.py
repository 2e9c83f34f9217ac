"""What HBONE costs a sidecar, measured in one run (not a test: ``python bench_hbone.py``).

Sequential keep-alive HTTP/1.1 requests through the client sidecar of ``hbone_harness`` to the
web app, (a) dialled directly (endpoint placement ``none``: plaintext) and (b) through HBONE
(``node``: mTLS HTTP/2 CONNECT to the node proxy, which dials the app), then the share of (b)
that is the socketpair between the upstream code and the stream: a 64-byte ping-pong over a
bare uvloop socketpair (one round trip = the two crossings one request makes). Prints µs per
request and ratios against (a); absolute numbers move with the machine's load.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from hbone_harness import hbone_bed
from proxy_harness import get, read_response

DURATION_S = 2.0


async def _rate(port: int, ip: str = "127.0.0.1") -> float:
    """µs per request over one keep-alive connection for DURATION_S."""
    reader, writer = await asyncio.open_connection(ip, port)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < DURATION_S:
        writer.write(get("/"))
        await read_response(reader)
        n += 1
    writer.close()
    return (time.perf_counter() - start) / n * 1e6


async def _socketpair_rtt() -> float:
    """µs per 64-byte round trip over a socketpair (uvloop transports both ends)."""
    a, b = socket.socketpair()
    loop = asyncio.get_running_loop()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)

    async def echo() -> None:
        while data := await rb.read(65536):
            wb.write(data)

    task = loop.create_task(echo())
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < DURATION_S:
        wa.write(b"x" * 64)
        await ra.readexactly(64)
        n += 1
    wa.close()
    await task
    return (time.perf_counter() - start) / n * 1e6


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hm-bench-hbone-") as tmp:
        async with hbone_bed(Path(tmp)) as bed:
            port = bed.workers["client-0"].outbound_port
            hbone = await _rate(port)
            bed.node_placement = "none"  # the same endpoint, dialled directly
            bed.publish()
            await asyncio.sleep(0.5)
            direct = await _rate(port)
            pair = await _socketpair_rtt()
    print(f"direct (plaintext to the app): {direct:7.1f} us/request")
    print(f"HBONE (via the node proxy):    {hbone:7.1f} us/request  x{hbone / direct:.2f}")
    print(f"socketpair round trip:         {pair:7.1f} us  "
          f"({pair / hbone * 100:.0f} % of an HBONE request)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    uvloop.run(main())
