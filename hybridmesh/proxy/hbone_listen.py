"""The sidecar's HBONE port (15008), bound at start, served by hbone_server.py from the first
connection on.

Every mTLS worker listens for HBONE (node proxies, waypoints and other sidecars may tunnel to
it), but most pods never receive a tunnel. Serving one needs the HTTP/2 machinery (h2, hpack,
the tunnel code: ~2 MB RSS), so the listening socket is bound here, at start — a port clash is
still a start-up error, and the kernel queues early connections — and the serving code is
imported when the socket first becomes readable (a one-off import of a few tens of ms on that
first tunnel), the way HTTP/2 sessions are imported at their first use.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from hybridmesh.proxy.worker import listen_socket

if TYPE_CHECKING:
    from hybridmesh.proxy.context import ProxyContext
    from hybridmesh.proxy.hbone_server import HboneServer

__all__ = ["HboneListener", "listen_hbone"]


class HboneListener(asyncio.AbstractServer):
    """The bound 15008 socket; an :class:`HboneServer` once a peer has connected."""

    def __init__(self, ctx: ProxyContext, sock: socket.socket) -> None:
        self._ctx = ctx
        self._sock = sock
        self.server: HboneServer | None = None
        self._closed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._first_connection)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def _first_connection(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        from hybridmesh.proxy.hbone_server import HboneServer

        self.server = HboneServer(self._ctx, self._sock)

    # -- asyncio.AbstractServer -------------------------------------------------------------
    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self.server is not None:
            self.server.close()
        else:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()
        await self._closed.wait()

    def is_serving(self) -> bool:
        return not self._closed.is_set()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    async def start_serving(self) -> None:
        return None  # serving from construction

    async def serve_forever(self) -> None:
        await self._closed.wait()

    def describe(self) -> dict[str, Any]:
        if self.server is not None:
            return self.server.describe()
        return {"port": self.port, "tunnels": 0, "streams": 0}


def listen_hbone(ctx: ProxyContext, host: str, port: int, *, reuse_port: bool) -> HboneListener:
    """Listen for HBONE on ``host:port`` (0: any free port, tests); ListenError if it cannot."""
    return HboneListener(ctx, listen_socket(host, port, reuse_port=reuse_port))
