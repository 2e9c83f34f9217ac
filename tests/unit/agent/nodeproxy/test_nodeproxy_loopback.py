"""End to end through two in-process node proxies on loopback (no privileges needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nodeproxy_bed import CLIENT_ID, CLIENT_IP, LOCAL_VIP, OTHER_IP, Bed, policy, roundtrip


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def test_cross_node_connection_goes_through_one_tunnel_as_the_source_identity(
        tmp_path: Path) -> None:
    async def body() -> None:
        bed = Bed(tmp_path)
        await bed.up()
        try:
            conns = [await bed.connect() for _ in range(3)]
            for i, (r, w) in enumerate(conns):
                assert await roundtrip(r, w, b"hello %d" % i) == b"hello %d" % i
            n1, n2 = bed.proxies["n1"], bed.proxies["n2"]
            assert n1.ctx.pool.connections == 1  # one TLS connection, three streams
            [tunnel] = n2._tunnels
            assert str(tunnel.peer) == CLIENT_ID  # the destination sees the source's SVID
            metrics = n2.ctx.metrics.exposition().decode()
            assert f'source_principal="{CLIENT_ID}"' in metrics
            assert bed.cp is not None and set(bed.cp.signed) >= {
                "default/client-0", "default/other-0", "default/local-0", "default/web-0"}
            for _, w in conns:
                w.close()
        finally:
            await bed.down()

    run(body())


def test_policy_denying_the_source_identity_refuses_the_stream(tmp_path: Path) -> None:
    async def body() -> None:
        bed = Bed(tmp_path)
        await bed.up([policy("deny-client", "DENY", [CLIENT_ID])])
        try:
            r, w = await bed.connect()
            assert await roundtrip(r, w) == b""
            r2, w2 = await bed.connect("default/other-0", OTHER_IP)
            assert await roundtrip(r2, w2) == b"ping"  # another identity still passes
            assert bed.proxies["n2"].ctx.metrics.refused("policy") == 1
            assert bed.proxies["n1"].ctx.metrics.refused("policy") == 1
            w2.close()
        finally:
            await bed.down()

    run(body())


def test_unresolvable_source_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        bed = Bed(tmp_path)
        await bed.up()
        try:
            r, w = await bed.connect(record=False)
            assert await roundtrip(r, w) == b""
            assert bed.proxies["n1"].ctx.metrics.refused("unresolved-source") == 1
            assert bed.proxies["n1"].ctx.pool.connections == 0
        finally:
            await bed.down()

    run(body())


def test_forged_source_ip_gets_the_real_pods_identity_and_policy(tmp_path: Path) -> None:
    """other-0 binds client-0's IP; the kernel's record says other-0's cgroup: it is judged
    as other-0 (denied), not as the client it impersonates (allowed)."""

    async def body() -> None:
        bed = Bed(tmp_path)
        other = "spiffe://cluster.local/ns/default/sa/other"
        await bed.up([policy("only-client", "ALLOW", [CLIENT_ID])])
        try:
            r, w = await bed.connect("default/other-0", CLIENT_IP)  # forged source address
            assert await roundtrip(r, w) == b""
            r2, w2 = await bed.connect()  # the real client-0 is allowed
            assert await roundtrip(r2, w2) == b"ping"
            peers = {str(t.peer) for t in bed.proxies["n2"]._tunnels}
            assert other in peers and CLIENT_ID in peers
            w2.close()
        finally:
            await bed.down()

    run(body())


def test_same_node_destination_needs_no_tunnel_and_is_still_authorized(tmp_path: Path) -> None:
    async def body() -> None:
        bed = Bed(tmp_path)
        await bed.up([policy("deny-other", "DENY", ["spiffe://cluster.local/ns/default/sa/other"],
                             app="local")])
        try:
            r, w = await bed.connect(dest=(LOCAL_VIP, 80))
            assert await roundtrip(r, w) == b"ping"
            r2, w2 = await bed.connect("default/other-0", OTHER_IP, dest=(LOCAL_VIP, 80))
            assert await roundtrip(r2, w2) == b""
            n1 = bed.proxies["n1"]
            assert n1.ctx.pool.connections == 0
            assert n1.ctx.metrics.refused("policy") == 1
            w.close()
        finally:
            await bed.down()

    run(body())
