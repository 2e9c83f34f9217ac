"""Pools of HTTP/2 upstream connections, per endpoint; h2 itself is loaded at the first dial.

Every mTLS peer gets a pool pair (HTTP/1.1 keep-alive and HTTP/2) when first used, and most
meshed traffic never takes the HTTP/2 one (HTTP/1.1 between proxies unless ``h2UpgradePolicy:
UPGRADE``). Keeping the pool apart from the connection code (h2upstream.py) means a worker
that never speaks HTTP/2 upstream never imports h2/hpack (~2 MB RSS).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from hybridmesh.proxy.upstream import Connector, EndpointKey, connect

if TYPE_CHECKING:
    from hybridmesh.proxy.h2upstream import H2Connection, H2UpstreamStream

__all__ = ["H2Pool"]


class H2Pool:
    """HTTP/2 connections per endpoint; a request gets a stream on one with room."""

    def __init__(self, *, mark: int | None, connect_timeout: float,
                 connector: Connector = connect) -> None:
        self.mark = mark
        self.connect_timeout = connect_timeout
        self.connector = connector
        self._conns: dict[EndpointKey, list[H2Connection]] = {}
        self._dialling: dict[EndpointKey, asyncio.Future[H2Connection]] = {}
        self.opened = 0

    def ready_stream(self, key: EndpointKey) -> H2UpstreamStream | None:
        """A stream on an open connection to ``key`` with room, if any: no await needed."""
        for conn in self._conns.get(key, ()):
            if conn.usable:
                return conn.new_stream()
        return None

    async def open_stream(self, key: EndpointKey) -> H2UpstreamStream:
        """A stream on a connection to ``key`` with room, dialling one if needed
        (:class:`~hybridmesh.proxy.upstream.ConnectFailed`)."""
        while True:
            stream = self.ready_stream(key)
            if stream is not None:
                return stream
            dialling = self._dialling.get(key)
            if dialling is None:
                break
            await asyncio.shield(dialling)  # share the connection being made
        fut: asyncio.Future[H2Connection] = asyncio.get_running_loop().create_future()
        self._dialling[key] = fut
        try:
            from hybridmesh.proxy.h2upstream import H2Connection  # h2: at the first dial

            _, conn = await self.connector(key, lambda: H2Connection(self, key),
                                           mark=self.mark, timeout=self.connect_timeout)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(exc)
                fut.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            self._dialling.pop(key, None)
        self.opened += 1
        self._conns.setdefault(key, []).append(conn)
        fut.set_result(conn)
        return conn.new_stream()

    def forget(self, conn: H2Connection) -> None:
        conns = self._conns.get(conn.key)
        if conns is not None and conn in conns:
            conns.remove(conn)

    def sweep(self) -> None:
        """Close connections that drained (GOAWAY) and carry no stream."""
        for conns in self._conns.values():
            for conn in [c for c in conns if c.draining and not c.streams]:
                conn.close()

    def close(self) -> None:
        for conns in self._conns.values():
            for conn in conns:
                conn.close()
        self._conns.clear()
