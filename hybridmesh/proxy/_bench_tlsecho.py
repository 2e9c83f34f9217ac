"""Benchmark: what TLS costs per record under uvloop, per OpenSSL context variant (no proxy).

    python -m hybridmesh.proxy._bench_tlsecho [--conns 16] [--duration 1.5] [--size 1024]
        [--repeats 3]

One process runs an echo server and ``--conns`` ping-pong clients on loopback, first in
plaintext, then with mesh TLS 1.3 contexts (P-256 SVIDs from a throwaway CA) in the variants
of :mod:`hybridmesh.proxy._tlstune`: OpenSSL's defaults, AES-128-GCM or ChaCha20 forced, the
buffers kept between records. It prints the process CPU per round trip (two TLS writes and
two TLS reads) per variant, interleaved ``--repeats`` times, and the medians with the excess
over plaintext: the share of a proxied request that OpenSSL and uvloop's SSL protocol cost.
Figures move with the neighbours on a shared machine: compare the excesses of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import ssl
import statistics
from datetime import timedelta

import uvloop

from hybridmesh.identity.ca import MeshCA
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.tls import client_context, server_context
from hybridmesh.identity.workload import Svid, make_csr, new_key
from hybridmesh.proxy._tlstune import Tuning, tune

__all__ = ["VARIANTS", "main"]

_AES128, _CHACHA = "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"
VARIANTS: dict[str, Tuning | None] = {
    "plaintext": None,
    "tls defaults (aes256)": Tuning(keep_buffers=False, suites=None),
    "aes128": Tuning(keep_buffers=False, suites=_AES128),
    "chacha20": Tuning(keep_buffers=False, suites=_CHACHA),
    "kept buffers (aes256)": Tuning(keep_buffers=True, suites=None),
    "aes128 + kept buffers": Tuning(keep_buffers=True, suites=_AES128),
}


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class _PingPong(asyncio.Protocol):
    """Sends a message, waits for all of it back, sends again until ``stop``."""

    def __init__(self, message: bytes, stop: list[bool]) -> None:
        self.message, self.stop = message, stop
        self.round_trips = self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport.write(self.message)

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        if self.pending >= len(self.message):
            self.pending -= len(self.message)
            self.round_trips += 1
            if not self.stop[0]:
                self.transport.write(self.message)


def _svid(ca: MeshCA, sa: str) -> Svid:
    key = new_key()
    ident = SpiffeId.for_workload(ca.trust_domain, "default", sa)
    return Svid(ca.sign(make_csr(key, ident), ident, timedelta(hours=1)), key, ca.bundle)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _contexts(tuning: Tuning | None, ca: MeshCA
                    ) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    if tuning is None:
        return None, None
    server, client = server_context(_svid(ca, "web")), client_context(_svid(ca, "client"))
    for ctx in (server, client):
        why = tune(ctx, tuning)
        if why is not None:
            raise SystemExit(f"cannot tune the TLS contexts: {why}")
    return server, client


async def _one(tuning: Tuning | None, ca: MeshCA, args: argparse.Namespace
               ) -> tuple[float, str]:
    """(CPU µs per round trip, negotiated cipher) for one variant."""
    loop = asyncio.get_running_loop()
    server_ctx, client_ctx = await _contexts(tuning, ca)
    server = await loop.create_server(_Echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    stop, message = [False], b"x" * args.size
    clients = [await loop.create_connection(
        lambda: _PingPong(message, stop), "127.0.0.1", port, ssl=client_ctx,
        server_hostname="hm" if client_ctx else None) for _ in range(args.conns)]
    cipher = clients[0][0].get_extra_info("cipher")
    await asyncio.sleep(0.2)  # warm-up
    n0, cpu0 = sum(p.round_trips for _, p in clients), _cpu_s()
    await asyncio.sleep(args.duration)
    n1, cpu1 = sum(p.round_trips for _, p in clients), _cpu_s()
    stop[0] = True
    for transport, _ in clients:
        transport.close()
    server.close()
    await asyncio.sleep(0.05)
    return (cpu1 - cpu0) / max(n1 - n0, 1) * 1e6, cipher[0] if cipher else "-"


async def _run(args: argparse.Namespace) -> None:
    ca = MeshCA.create_root("cluster.local")
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    await _one(Tuning(keep_buffers=False, suites=None), ca, args)  # OpenSSL's lazy set-up
    for rep in range(args.repeats):
        for name, tuning in VARIANTS.items():
            us, cipher = await _one(tuning, ca, args)
            results[name].append(us)
            print(f"run {rep + 1} {name:24s} {us:7.2f} µs/round trip  {cipher}", flush=True)
    base = statistics.median(results["plaintext"])
    for name, values in results.items():
        med = statistics.median(values)
        print(f"median {name:24s} {med:7.2f} µs/round trip  (+{med - base:5.2f} over plaintext)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--duration", type=float, default=1.5)
    p.add_argument("--size", type=int, default=1024, help="message bytes")
    p.add_argument("--repeats", type=int, default=3)
    uvloop.run(_run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
