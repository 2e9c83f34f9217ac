"""Long-lived streaming connections plus a steady trickle of new connects, run inside a pod.

    python3 streamer.py HOST PORT --conns 100 --seconds 8

Opens ``--conns`` connections to a banner+echo service (``hybridmesh.lab.workloads.banner``),
prints ``READY`` once all of them have their banner, then for ``--seconds`` each connection
sends a chunk and reads its echo back every ~20 ms, while one more connection is opened (and
closed) every 100 ms. Prints one JSON document: per-connection failures, the largest gap
between two echoes on any connection, and which backends new connects reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

CHUNK = 64


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    banner = await asyncio.wait_for(reader.readline(), 5)
    peer = writer.get_extra_info("peername")[0]
    return reader, writer, f"{banner.split()[1].decode()}@{peer}"


async def _stream(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter, str], index: int,
                  until: float, out: dict[str, Any]) -> None:
    reader, writer, _ = conn
    last, seq = time.monotonic(), 0
    try:
        while time.monotonic() < until:
            chunk = f"{index:04d}:{seq:08d}:".encode().ljust(CHUNK - 1, b"x") + b"\n"
            writer.write(chunk)
            echoed = await asyncio.wait_for(reader.readexactly(CHUNK), 5)
            if echoed != chunk:
                raise ConnectionError(f"echo mismatch on connection {index}")
            now = time.monotonic()
            out["maxGap"] = max(out["maxGap"], now - last)
            last, seq = now, seq + 1
            out["bytes"] += 2 * CHUNK
            await asyncio.sleep(0.02)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
        out["failures"].append(f"connection {index}: {type(exc).__name__}: {exc}")
    finally:
        writer.close()


async def _trickle(host: str, port: int, until: float, out: dict[str, Any]) -> None:
    reached: Counter[str] = Counter()
    while time.monotonic() < until:
        try:
            _, writer, who = await _open(host, port)
            reached[who] += 1
            writer.close()
        except (OSError, TimeoutError, IndexError) as exc:
            out["newConnectFailures"].append(f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(0.1)
    out["newConnects"] = dict(reached)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    conns = await asyncio.gather(*(_open(args.host, args.port) for _ in range(args.conns)))
    out: dict[str, Any] = {"failures": [], "newConnectFailures": [], "maxGap": 0.0, "bytes": 0,
                           "backends": dict(Counter(c[2] for c in conns))}
    print("READY", flush=True)
    until = time.monotonic() + args.seconds
    await asyncio.gather(*(_stream(c, i, until, out) for i, c in enumerate(conns)),
                         _trickle(args.host, args.port, until, out))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0)
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result), flush=True)
    sys.exit(1 if result["failures"] or result["newConnectFailures"] else 0)
