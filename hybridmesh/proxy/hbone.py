"""HBONE for the sidecar engine, the client half: a CONNECT stream that looks like a socket.

A ``node`` pod has no proxy of its own: its node proxy answers for it on the node's tunnel
port (15008, docs/node.md §3). A sidecar (or a waypoint) that picked such an endpoint must not
dial the pod in plaintext — that would bypass the pod's identity-based policy — so it opens
(or reuses) an mTLS HTTP/2 tunnel to that node's proxy with **this proxy's own SVID** and
asks for the pod with ``CONNECT <pod ip>:<port>``. The destination node proxy authorizes the
stream by our verified identity, exactly as it does for another node proxy's streams.

What the upstream code gets back is an ordinary ``(transport, protocol)`` pair: the stream is
bridged (``_tunnelio.StreamBridge``, h2 flow control as backpressure) to one end of a
``socketpair`` and the caller's protocol is connected to the other end. The pools, the HTTP/1
and HTTP/2 upstream code and the opaque relay therefore need no change; the price is one
unix-socket hop per chunk, measured in ``tests/unit/proxy/test_hbone.py`` (see docs/node.md §5).

Secure naming: the tunnel's server must be one of the identities of the ``node`` pods that
node hosts (only that node's proxy can hold them: the CA signs a pod's SVID for its own node
only); the SNI asks for the destination pod's certificate. One tunnel per (our identity,
destination node), as between node proxies.

A Service with a waypoint is reached the same way, through the waypoint instead of a node proxy
(hbone_sidecar.py): its "node" is ``waypoint:<ip>:<port>``, the server must be exactly the
waypoint's identity and the CONNECT names the Service's cluster IP:port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar, cast

from hybridmesh.agent.nodeproxy._tunnelio import StreamBridge, TunnelConn
from hybridmesh.agent.nodeproxy.tunnel import Addr, sni_name
from hybridmesh.agent.nodeproxy.tunnels import TunnelDialError, TunnelPool
from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId
from hybridmesh.proxy.config import TUNNEL_PORT
from hybridmesh.proxy.errors import Reason
from hybridmesh.proxy.hbone_sidecar import NO_WAYPOINT, VIA_WAYPOINT
from hybridmesh.proxy.upstream import ConnectFailed, EndpointKey

if TYPE_CHECKING:
    from hybridmesh.proxy.context import ProxyContext
    from hybridmesh.proxy.identity import SvidManager

__all__ = ["HBONE_PLACEMENT", "HboneDialer", "Held", "bridged_pair"]

HBONE_PLACEMENT: Final = "node"
"""Endpoints of this placement are reached through their node proxy's HBONE port."""
_REFUSAL_REASONS: Final = {"policy": Reason.POLICY.value,
                           "tunnel-peer-auth": Reason.PEER_AUTH.value}
P = TypeVar("P", bound=asyncio.Protocol)


class Held(asyncio.Protocol):
    """The far end of a socketpair until a stream bridge takes it: reading paused, anything
    read anyway kept for the bridge."""

    def __init__(self) -> None:
        self.buffered: list[bytes] = []
        self.eof = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.buffered.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def take(self) -> bytes:
        data, self.buffered = b"".join(self.buffered), []
        return data

    def join(self, conn: TunnelConn, sid: int,
             on_closed: Callable[[StreamBridge], None] | None = None) -> StreamBridge:
        """Bridge stream ``sid`` of ``conn`` to this socket, now (synchronously: stream data
        that arrives later finds the bridge in place)."""
        assert self.transport is not None
        bridge = conn.bridge(sid, on_closed)
        bridge.attach(self.transport, self.take(), self.eof)
        return bridge


async def bridged_pair() -> tuple[socket.socket, Held]:
    """A socketpair: the near socket for the caller's protocol, the far end held (paused)."""
    near, far = socket.socketpair()
    near.setblocking(False)
    far.setblocking(False)
    try:
        _, held = await asyncio.get_running_loop().connect_accepted_socket(Held, far)
    except BaseException:
        near.close()
        far.close()
        raise
    return near, held


class HboneDialer:
    """This proxy's HBONE tunnels to node proxies, and CONNECT streams on them."""

    def __init__(self, ctx: ProxyContext, identity: SvidManager) -> None:
        self._ctx = ctx
        self._identity = identity
        self._pool = TunnelPool(ctx.tasks, mark=ctx.mark)
        self._nodes: tuple[object, dict[str, Addr], dict[str, frozenset[SpiffeId]]] | None = None
        self.streams = 0  # CONNECT streams accepted by node proxies so far

    @property
    def tunnels(self) -> int:
        return self._pool.connections

    # -- where node proxies are ----------------------------------------------------------------
    def _facts(self) -> tuple[dict[str, Addr], dict[str, frozenset[SpiffeId]]]:
        """(node → tunnel address, node → identities its proxy may present), per snapshot."""
        tables = self._ctx.tables
        cached = self._nodes
        if cached is not None and cached[0] is tables:
            return cached[1], cached[2]
        addresses: dict[str, Addr] = {}
        hosted: dict[str, set[SpiffeId]] = {}
        if tables is not None:
            for raw in tables.snapshot.get("nodes") or ():
                if raw.get("name") and raw.get("fabricIP"):
                    port = int(raw.get("tunnelPort") or TUNNEL_PORT)  # tests move it
                    addresses[str(raw["name"])] = (str(raw["fabricIP"]), port)
            domain = str((tables.snapshot.get("mesh") or {}).get("trustDomain") or "")
            for meta in tables.by_ip.values():
                if meta.placement == HBONE_PLACEMENT:
                    with contextlib.suppress(InvalidSpiffeId):
                        hosted.setdefault(meta.node, set()).add(
                            SpiffeId.for_workload(domain, meta.namespace, meta.service_account))
        frozen = {node: frozenset(ids) for node, ids in hosted.items()}
        self._nodes = (tables, addresses, frozen)
        return addresses, frozen

    # -- dialling --------------------------------------------------------------------------------
    async def connect(self, key: EndpointKey, factory: Callable[[], P], expected: SpiffeId,
                      node: str, *, timeout: float) -> tuple[asyncio.Transport, P]:
        """A connection to the node pod at ``key`` through ``node``'s proxy; ConnectFailed
        (``connect-peer-auth`` for identity failures, ``policy`` when the destination's
        AuthorizationPolicy refused us) otherwise."""
        material = self._identity.material
        if material is None:
            raise ConnectFailed(key, "HBONE: no valid certificate of our own",
                                reason=Reason.PEER_AUTH.value)
        address, allowed = self._where(key, expected, node)
        try:
            async with asyncio.timeout(timeout):
                conn = await self._pool.get((material.svid.identity, node), address, material,
                                            allowed, sni_name(expected))
                return await self.open(conn, key, factory)
        except TimeoutError:
            raise ConnectFailed(key, f"HBONE via node {node}: no answer within "
                                f"{timeout * 1000:.0f} ms", timeout=True) from None
        except TunnelDialError as exc:
            raise ConnectFailed(key, f"HBONE tunnel to node {node}: {exc}",
                                reason=_REFUSAL_REASONS.get(exc.reason)) from None

    def _where(self, key: EndpointKey, expected: SpiffeId, node: str
               ) -> tuple[Addr, frozenset[SpiffeId]]:
        """(tunnel address, identities allowed to answer) for ``node``: a node proxy (one of
        its pods' identities), or ``waypoint:<ip>:<port>`` (hbone_sidecar.py), whose server
        must be exactly the waypoint's identity."""
        if node.startswith(VIA_WAYPOINT):
            host, _, port = node.removeprefix(VIA_WAYPOINT).rpartition(":")
            if not host:
                raise ConnectFailed(key, f"{NO_WAYPOINT}: the Service's waypoint is not ready")
            return (host, int(port)), frozenset({expected})
        addresses, hosted = self._facts()
        address = addresses.get(node)
        if address is None:
            raise ConnectFailed(key, f"HBONE: no tunnel address for node {node!r} in the snapshot")
        return address, hosted.get(node, frozenset()) | {expected}

    async def open(self, conn: TunnelConn, key: EndpointKey, factory: Callable[[], P]
                   ) -> tuple[asyncio.Transport, P]:
        """One CONNECT stream to ``key`` on ``conn``, returned as a connected transport."""
        loop = asyncio.get_running_loop()
        near, held = await bridged_pair()
        opened: asyncio.Future[str | None] = loop.create_future()

        def on_opened(sid: int, reason: str | None) -> None:
            if opened.done():  # the caller gave up meanwhile
                if reason is None:
                    conn.reset(sid)
                return
            if reason is None:
                held.join(conn, sid)
            opened.set_result(reason)

        conn.open(key, self._ctx.config.pod_key, on_opened)
        try:
            reason = await opened
        except BaseException:
            _close(near, held)
            raise
        if reason is not None:
            _close(near, held)
            raise ConnectFailed(key, f"HBONE CONNECT refused: {reason}",
                                reason=_REFUSAL_REASONS.get(reason))
        self.streams += 1
        try:
            return await loop.create_connection(factory, sock=near)
        except OSError as exc:
            _close(near, held)
            raise ConnectFailed(key, f"HBONE stream: {exc}") from None

    def close(self) -> None:
        self._pool.drain()


def _close(near: socket.socket, held: Held) -> None:
    near.close()
    if held.transport is not None:
        held.transport.abort()
