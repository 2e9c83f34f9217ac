"""One proxy worker as its own process, for ``_bench_tls`` (no root: a fixed original dst).

    python -OO -m hybridmesh.proxy._bench_tls_child --pod NS/NAME --control SOCK
        --token FILE --bind IP [--inbound-port N] --dst IP:PORT --report FILE [--trace]

Why a process per worker: the figures the issue targets are *per proxy process* (peak RSS,
CPU), and two workers in one interpreter share their imports. The child prints ``ready
OUT IN`` once it has a snapshot and an SVID. ``SIGUSR2`` marks the start of the measured run
(GC pause stats reset, a tracemalloc baseline with ``--trace``); ``SIGTERM`` drains, writes
the report (GC pauses per generation, tracemalloc growth since the mark, live objects of the
TLS types) to ``--report`` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import signal
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from hybridmesh._http import install_uvloop
from hybridmesh.proxy.config import ProxyConfig
from hybridmesh.proxy.server import settle_gc
from hybridmesh.proxy.worker import Worker

__all__ = ["GcPauses", "main"]

_TLS_TYPES = ("SSLProtocol", "SSLObject", "_SSLSocket", "MemoryBIO", "_Held", "_Verifying",
              "Http1Session", "UpstreamConnection", "TCPTransport", "bytearray")


class GcPauses:
    """Collections and their pauses per generation, from ``gc.callbacks`` (why: a full
    collection over tens of thousands of objects can stall the loop for milliseconds)."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._t0)

    def reset(self) -> None:
        for gen in self.pauses.values():
            gen.clear()

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for gen, times in self.pauses.items():
            ordered = sorted(times)
            out[f"gen{gen}"] = {
                "count": len(ordered),
                "max_ms": round(ordered[-1] * 1e3, 3) if ordered else 0.0,
                "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1e3, 3) if ordered else 0.0,
                "total_ms": round(sum(ordered) * 1e3, 2)}
        return out


def _type_counts() -> dict[str, int]:
    counts = Counter(type(o).__name__ for o in gc.get_objects())
    return {name: counts[name] for name in _TLS_TYPES if counts[name]}


def _trace_growth(base: tracemalloc.Snapshot | None, top: int = 25) -> list[str]:
    """Growth by line since ``base``; before any mark: what is allocated, by file."""
    if not tracemalloc.is_tracing():
        return []
    now = tracemalloc.take_snapshot()
    if base is None:
        return [str(stat) for stat in now.statistics("filename")[:top]]
    return [str(stat) for stat in now.compare_to(base, "lineno")[:top]]


class _Child:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.gc = GcPauses()
        self.base: tracemalloc.Snapshot | None = None
        self.phases: list[dict[str, Any]] = []
        self.profiler = cProfile.Profile() if args.profile else None
        host, port = args.dst.rsplit(":", 1)
        dst = (host, int(port))
        config = ProxyConfig(namespace=args.pod.split("/")[0], pod=args.pod.split("/")[1],
                             control_socket=args.control, outbound_port=0,
                             inbound_port=args.inbound_port, admin_port=0, mark=None,
                             bind_host=args.bind, token_file=args.token)
        self.worker = Worker(config, original_dst=lambda _s, _d: dst)

    def mark(self) -> None:
        """End the current phase (its report is kept) and start the next."""
        self.phases.append(self._phase())
        if self.profiler is not None:
            self.profiler.enable()  # from the first measured phase to the end
        self.gc.reset()
        if self.args.trace:
            self.base = tracemalloc.take_snapshot()

    def _phase(self) -> dict[str, Any]:
        return {"gc": self.gc.summary(), "objects": _type_counts(),
                "trace": _trace_growth(self.base)}

    async def run(self) -> None:
        w = self.worker
        await w.start()
        await w.wait_ready(10)
        async with asyncio.timeout(10):
            while not w.ready:
                await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR2, self.mark)
        loop.add_signal_handler(signal.SIGTERM, self._stop)
        if not self.args.no_gc_freeze:
            await settle_gc(w)  # as the proxy's own main does (server.py)
        print("ready", w.outbound_port, w.inbound_port, flush=True)
        await w.wait_stopped()

    def _stop(self) -> None:
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(self.args.profile)
        phases = [*self.phases, self._phase()]
        tracked = len(gc.get_objects())
        t0 = time.perf_counter()
        gc.collect()  # what a full collection costs now (frozen objects are not traversed)
        report = {"phases": phases, "frozen": gc.get_freeze_count(), "tracked": tracked,
                  "full_collect_ms": round((time.perf_counter() - t0) * 1e3, 2)}
        Path(self.args.report).write_text(json.dumps(report))
        self.worker.request_drain()


def _without_tlsread() -> None:
    from hybridmesh.proxy import mtls, mtls_server

    def unchanged(_transport: asyncio.BaseTransport) -> None:
        return None

    for module in (mtls, mtls_server):
        vars(module)["read_buffered"] = unchanged


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hybridmesh.proxy._bench_tls_child")
    p.add_argument("--pod", required=True)
    p.add_argument("--control", required=True)
    p.add_argument("--token", default=None, help="bootstrap token file (none: plaintext)")
    p.add_argument("--bind", required=True)
    p.add_argument("--inbound-port", type=int, default=0)
    p.add_argument("--dst", required=True, help="the original destination of every connection")
    p.add_argument("--report", required=True)
    p.add_argument("--trace", action="store_true", help="tracemalloc (slows the worker)")
    p.add_argument("--profile", metavar="FILE", help="cProfile the measured phases into FILE")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="A/B: skip settle_gc (no gc.freeze once ready)")
    p.add_argument("--copy-reads", action="store_true",
                   help="A/B: TLS sessions read through uvloop's copying path (no _tlsread)")
    args = p.parse_args(argv)
    if args.copy_reads:
        _without_tlsread()
    if args.trace:
        tracemalloc.start(4)
    install_uvloop()
    child = _Child(args)
    asyncio.run(child.run())
    sys.stdout.flush()


if __name__ == "__main__":
    main()
