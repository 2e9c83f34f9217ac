"""Client helper run inside a node netns: steered connections as the kernel would record them.

Before each connect it binds the source address, then writes the ``hm_node_src`` entry
(4-tuple → cgroup id, original destination) the steering program's sockops would write, then
connects to the node proxy's outbound listener. Prints one JSON report line.

Modes: ``echo`` (COUNT connections, one round trip each every INTERVAL for HOLD seconds),
``storm`` (open connections as fast as possible for DURATION), ``latency`` (round trips on one
connection, or on a fresh connection each with --fresh, every INTERVAL for DURATION).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from pathlib import Path

from hybridmesh.agent.nodeproxy.source import record_entry
from hybridmesh.ebpf import _libbpf


def addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class Steer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.fd = _libbpf.obj_get(Path(args.pin))
        self.args = args

    async def connect(self, record: bool = True) -> tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]:
        args = self.args
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.src, 0))
        proxy = addr(args.proxy)
        if record:
            record_entry(self.fd, (args.src, sock.getsockname()[1]), proxy, args.cgroup,
                         addr(args.dest))
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, proxy)
        except OSError:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    timeout: float = 3.0) -> float | None:
    start = time.perf_counter()
    try:
        writer.write(b"x" * 64)
        await writer.drain()
        async with asyncio.timeout(timeout):
            await reader.readexactly(64)
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return None
    return (time.perf_counter() - start) * 1000


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def echo(steer: Steer, args: argparse.Namespace) -> dict[str, object]:
    conns, refused = [], 0
    for _ in range(args.count):
        try:
            r, w = await steer.connect(record=not args.no_record)
        except OSError:
            refused += 1
            continue
        if await roundtrip(r, w) is None:
            refused += 1
            w.close()
            continue
        conns.append((r, w))
    print(json.dumps({"event": "opened", "opened": len(conns)}), flush=True)
    rounds = failures = 0
    latencies: list[float] = []
    end = time.monotonic() + args.hold
    while time.monotonic() < end:
        results = await asyncio.gather(*(roundtrip(r, w) for r, w in conns))
        rounds += len(results)
        failures += sum(1 for x in results if x is None)
        latencies += [x for x in results if x is not None]
        await asyncio.sleep(args.interval)
    for _, w in conns:
        w.close()
    return {"opened": len(conns), "refused": refused, "rounds": rounds, "failures": failures,
            "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}


async def storm(steer: Steer, args: argparse.Namespace) -> dict[str, object]:
    ok = refused = 0
    held = []
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        try:
            r, w = await steer.connect()
        except OSError:
            refused += 1
            continue
        if await roundtrip(r, w, timeout=1.0) is None:
            refused += 1
            w.close()
        else:
            ok += 1
            held.append(w)  # keep them open: the noisy pod hoards connections
    for w in held:
        w.close()
    return {"ok": ok, "refused": refused}


async def latency(steer: Steer, args: argparse.Namespace) -> dict[str, object]:
    samples: list[float] = []
    failures = 0
    conn = None if args.fresh else await steer.connect()
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        start = time.perf_counter()
        try:
            r, w = conn if conn is not None else await steer.connect()
        except OSError:
            failures += 1
            continue
        ms = await roundtrip(r, w)
        if conn is None:
            w.close()
        if ms is None:
            failures += 1
        else:
            samples.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(args.interval)
    return {"samples": len(samples), "failures": failures, "p50": pct(samples, 0.5),
            "p99": pct(samples, 0.99)}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["echo", "storm", "latency"])
    for name in ("--pin", "--src", "--proxy", "--dest"):
        p.add_argument(name, required=True)
    p.add_argument("--cgroup", type=int, required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--nice", type=int, default=0)
    args = p.parse_args()
    if args.nice:
        os.nice(args.nice)
    steer = Steer(args)
    report = await {"echo": echo, "storm": storm, "latency": latency}[args.mode](steer, args)
    os.close(steer.fd)
    print(json.dumps(report), flush=True)


asyncio.run(main())
