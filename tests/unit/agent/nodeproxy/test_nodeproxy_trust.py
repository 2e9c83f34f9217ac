"""Which HTTP/2 connections skip h2's inbound header validation (``trust_peer``): the tunnel
connections whose other end proved an SVID (a mesh proxy), on both ends — never a connection
that was not verified, and the pods' own connections are never HTTP/2 at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nodeproxy_bed import Bed, roundtrip

from hybridmesh.agent.nodeproxy._tunnelio import TunnelConn
from hybridmesh.agent.nodeproxy.tunnel import TUNNEL_LIMITS
from hybridmesh.proxy.protocols.http2 import H2Client, H2Server


def _validates(conn: TunnelConn) -> bool:
    """Does the engine still run h2's own inbound header checks on this connection?"""
    config = conn.h2._conn.config  # the h2 connection trust_peer() configures
    return bool(config.validate_inbound_headers and config.normalize_inbound_headers)


def test_an_unverified_tunnel_connection_is_not_trusted() -> None:
    for engine in (H2Client(TUNNEL_LIMITS), H2Server(TUNNEL_LIMITS)):
        conn = TunnelConn(engine)
        assert not conn.trusted and _validates(conn)  # before the handshake's check
        conn.start(None)  # no verified identity: nothing skipped
        assert not conn.trusted and _validates(conn)


def test_both_ends_of_a_verified_node_tunnel_trust_each_other(tmp_path: Path) -> None:
    async def body() -> None:
        bed = Bed(tmp_path)
        await bed.up()
        try:
            r, w = await bed.connect()
            assert await roundtrip(r, w) == b"ping"
            [[client]] = bed.proxies["n1"].ctx.pool._conns.values()
            [server] = bed.proxies["n2"]._tunnels
            for conn in (client, server):
                assert conn.peer is not None and conn.trusted and not _validates(conn)
            w.close()
        finally:
            await bed.down()

    asyncio.run(asyncio.wait_for(body(), 30))
