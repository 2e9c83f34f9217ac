"""Micro-benchmark: the asyncio Protocol relay (relay.py) vs an ``os.splice`` relay.

    python -m hybridmesh.proxy._bench_relay [--mib 512] [--pingpong 20000]

Both relay one client↔server TCP connection pair on loopback inside one uvloop process; a
separate *process* (so the relay has its core to itself, as in the proxy) pumps bytes through:
bulk (one direction, MiB/s) and ping-pong (64-byte request/answer round trips per second).
The splice variant moves bytes socket → pipe → socket in the kernel (``SPLICE_F_MOVE |
SPLICE_F_NONBLOCK``), driven by ``add_reader``/``add_writer`` on the raw fds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from multiprocessing import Process

import uvloop

from hybridmesh.proxy.relay import Relay

__all__ = ["main"]

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_CHUNK = 1 << 16


class _SpliceHalf:
    """One direction src → pipe → dst, readiness-driven."""

    def __init__(self, loop: asyncio.AbstractEventLoop, src: socket.socket,
                 dst: socket.socket, done: asyncio.Future[None]) -> None:
        self.loop, self.src, self.dst, self.done = loop, src, dst, done
        self.rpipe, self.wpipe = os.pipe()
        self.in_pipe = 0
        loop.add_reader(src.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            n = os.splice(self.src.fileno(), self.wpipe, _CHUNK, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return
        if n == 0:
            self.loop.remove_reader(self.src.fileno())
            self.dst.shutdown(socket.SHUT_WR)
            if not self.done.done():
                self.done.set_result(None)
            return
        self.in_pipe += n
        self._drain()

    def _drain(self) -> None:
        while self.in_pipe:
            try:
                n = os.splice(self.rpipe, self.dst.fileno(), self.in_pipe, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                self.loop.remove_reader(self.src.fileno())
                self.loop.add_writer(self.dst.fileno(), self._writable)
                return
            self.in_pipe -= n

    def _writable(self) -> None:
        self._drain()
        if not self.in_pipe:
            self.loop.remove_writer(self.dst.fileno())
            self.loop.add_reader(self.src.fileno(), self._readable)


def _peer(port: int, mode: str, amount: int) -> None:
    """The traffic generator process: connects to the relay and pumps bytes through it."""
    server = socket.create_server(("127.0.0.1", port + 1))
    client = socket.create_connection(("127.0.0.1", port))
    far, _ = server.accept()
    for s in (client, far):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    if mode == "bulk":
        block = b"x" * (1 << 20)
        import threading

        def sink() -> None:
            got = 0
            while got < amount:
                got += len(far.recv(1 << 20))

        reader = threading.Thread(target=sink)
        reader.start()
        for _ in range(amount >> 20):
            client.sendall(block)
        reader.join()
        rate = amount / (time.perf_counter() - t0) / (1 << 20)
        print(f"  bulk: {rate:8.0f} MiB/s")
    else:
        msg = b"p" * 64
        for _ in range(amount):
            client.sendall(msg)
            far.recv(64)
            far.sendall(msg)
            client.recv(64)
        rate = amount / (time.perf_counter() - t0)
        print(f"  ping-pong: {rate:8.0f} round trips/s")
    client.close()
    far.close()


async def _relay_once(kind: str, port: int, mode: str, amount: int) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", port))
    listener.setblocking(False)
    proc = Process(target=_peer, args=(port, mode, amount))
    proc.start()
    down, _ = await loop.sock_accept(listener)
    up = socket.create_connection(("127.0.0.1", port + 1))
    for s in (down, up):
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kind == "protocol":
        relay = Relay()
        await loop.connect_accepted_socket(lambda: relay.down, down)
        await loop.create_connection(lambda: relay.up, sock=up)
        relay.upstream_connected()
    else:
        d1, d2 = loop.create_future(), loop.create_future()
        _SpliceHalf(loop, down, up, d1)
        _SpliceHalf(loop, up, down, d2)
    while proc.is_alive():
        await asyncio.sleep(0.05)
    listener.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=512)
    p.add_argument("--pingpong", type=int, default=20000)
    args = p.parse_args()
    port = 42000
    for kind in ("protocol", "splice"):
        print(kind)
        for mode, amount in (("bulk", args.mib << 20), ("pingpong", args.pingpong)):
            uvloop.run(_relay_once(kind, port, mode, amount))
            port += 2


if __name__ == "__main__":
    main()
