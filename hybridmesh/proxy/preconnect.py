"""An upstream connection opened *while* detection runs, for destinations fixed at accept time.

Inbound, the destination does not depend on the protocol (it is the pod's own ``ip:port``), so
the proxy connects at once instead of after detection. Two gains:

- a server-speaks-first app (SMTP, MySQL) sends its banner on this connection right away, and
  the banner itself *is* the detection verdict: opaque, without waiting for the window to end;
- an HTTP connection finds its first upstream connection already made: it joins the pool.

:class:`Preconnect` is the protocol of that early connection until someone adopts it: it
buffers whatever the upstream sends (and pauses reading) and reports the first sign of life.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hybridmesh.proxy.protocols.detect import http2_server_preface
from hybridmesh.proxy.relay import Relay
from hybridmesh.proxy.upstream import H1Upstream, Pool

__all__ = ["Preconnect"]


class Preconnect(asyncio.Protocol):
    """Holds an early upstream connection; ``on_activity`` fires once when the upstream
    speaks, half-closes or closes before anyone adopted the connection."""

    def __init__(self, on_activity: Callable[[], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffered: list[bytes] = []
        self.eof = False
        self.lost = False
        self._on_activity: Callable[[], None] | None = on_activity

    @property
    def pristine(self) -> bool:
        """Connected and silent: safe to use as an HTTP/1 connection."""
        return self.transport is not None and not (self.buffered or self.eof or self.lost)

    @property
    def awaiting_client(self) -> bool:
        """Connected, and nothing from the app that settles the protocol: silent, or only an
        HTTP/2 server's SETTINGS (an h2 app greets every client; the client decides)."""
        return self.transport is not None and not (self.eof or self.lost) and (
            not self.buffered or http2_server_preface(self.buffered[0]))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffered.append(data)
        if self.transport is not None:
            self.transport.pause_reading()
        if not http2_server_preface(self.buffered[0]):  # an h2 app's SETTINGS: client decides
            self._activity()

    def eof_received(self) -> bool:
        self.eof = True
        self._activity()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._activity()

    def _activity(self) -> None:
        callback, self._on_activity = self._on_activity, None
        if callback is not None:
            callback()

    def disown(self) -> None:
        """Nobody needs the connection: close it."""
        self._on_activity = None
        if self.transport is not None and not self.lost:
            self.transport.abort()

    def to_pool(self, pool: Pool, key: tuple[str, int]) -> None:
        """Hand a pristine connection to the HTTP/1 pool as an idle keep-alive connection."""
        self._on_activity = None
        assert self.transport is not None
        conn = H1Upstream(pool, key)
        self.transport.set_protocol(conn)
        conn.connection_made(self.transport)
        pool.release(conn)

    def to_relay(self, relay: Relay) -> None:
        """Become the relay's upstream side, with what the upstream already sent."""
        self._on_activity = None
        assert self.transport is not None
        up = relay.up
        self.transport.set_protocol(up)
        up.connection_made(self.transport)
        for chunk in self.buffered:
            up.read_bytes += len(chunk)
            up._pending.append(chunk)
        if self.eof:
            up.eof = True
            up._pending_eof = True
