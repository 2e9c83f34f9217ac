"""HBONE between placements, on loopback:

- a sidecar calling a Service that has a waypoint goes through the waypoint (hbone_sidecar.py):
  HTTP and opaque, judged there with the sidecar's identity; no ready waypoint → refused;
- a node pod calling a sidecar pod: an HBONE stream from its node proxy with the node pod's
  SVID (agent/nodeproxy/sidecar.py), so the sidecar applies L7 policy to the node pod."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hbone_harness import API_IP, CLIENT_ID, FRONT_ID, WAYPOINT_ID, Bed, deny, hbone_bed
from proxy_harness import get, read_response

from hybridmesh.proxy.hbone_listen import HboneListener
from hybridmesh.proxy.testing import endpoint, service

API_VIP, FAKE_VIP = "10.96.0.11", "10.96.0.14"

pytestmark = pytest.mark.timeout(60)


def uv(case: Callable[[Path], Coroutine[Any, Any, None]]) -> Callable[[Path], None]:
    """Run the async test body on uvloop (the proxy's loop)."""

    @functools.wraps(case)
    def run(tmp_path: Path) -> None:
        uvloop.run(case(tmp_path))

    return run


async def _client_sees_waypoint(bed: Bed, *, ready: bool = True) -> None:
    """Wait until client-0's tables list the waypoint Service (with an endpoint if ready)."""
    async with asyncio.timeout(10):
        while True:
            tables = bed.workers["client-0"].ctx.tables
            entry = tables.services.get("default/waypoint-web") if tables else None
            if entry is not None and bool(entry.endpoints) == ready:
                return
            await asyncio.sleep(0.02)


@uv
async def test_a_sidecar_sends_a_waypointed_service_through_its_waypoint(tmp_path: Path) -> None:
    async with hbone_bed(tmp_path, policies=[deny("no-admin", paths=["/admin"])],
                         waypoint=True) as bed:
        await _client_sees_waypoint(bed)
        ok = await bed.request(get("/x"))
        denied = await bed.request(get("/admin"))
        assert ok.startswith(b"HTTP/1.1 200") and b"ok GET /x" in ok, ok
        assert denied.startswith(b"HTTP/1.1 403") and b"default/no-admin" in denied, denied
        assert [r.path for r in bed.web.seen] == ["/x"]
        waypoint = bed.workers["waypoint-web-0"].exposition().decode()
        # the waypoint judged the sidecar's own identity (its tunnel's), both requests
        assert bed.metric(waypoint, "request_total", reporter="waypoint",
                          source_principal=CLIENT_ID) == 2, waypoint
        # the pods' node proxy saw only the waypoint, never the sidecar directly
        text = bed.node_metrics()
        assert bed.metric(text, "tcp_open_total", source_principal=WAYPOINT_ID) >= 1, text
        assert bed.metric(text, "tcp_open_total", source_principal=CLIENT_ID) == 0, text
        client = bed.workers["client-0"].exposition().decode()
        assert bed.metric(client, "request_total", reporter="source",
                          destination_principal=WAYPOINT_ID) == 2, client


@uv
async def test_opaque_tcp_to_a_waypointed_service_goes_through_the_waypoint(
        tmp_path: Path) -> None:
    async with hbone_bed(tmp_path, web_protocol="tcp", waypoint=True) as bed:
        await _client_sees_waypoint(bed)
        answer = await bed.request(get("/raw", close=True))
        assert answer.startswith(b"HTTP/1.1 200"), answer
        text = bed.node_metrics()
        assert bed.metric(text, "tcp_open_total", source_principal=WAYPOINT_ID) >= 1, text
        assert bed.metric(text, "tcp_open_total", source_principal=CLIENT_ID) == 0, text


def _unready(bed: Bed) -> list[dict[str, Any]]:
    """The bed's Services with the waypoint Service listed but without a ready endpoint."""
    svcs = Bed.services(bed)
    for svc in svcs:
        if svc["name"] == "waypoint-web":
            svc["endpoints"] = []
    return svcs


@uv
async def test_no_ready_waypoint_refuses_instead_of_bypassing(tmp_path: Path) -> None:
    async with hbone_bed(tmp_path, policies=[deny("no-admin", paths=["/admin"])],
                         waypoint=True) as bed:
        bed.services = functools.partial(_unready, bed)  # type: ignore[method-assign]
        bed.publish()
        await _client_sees_waypoint(bed, ready=False)
        answer = await bed.request(get("/admin"))
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"hm-proxy-error: no-waypoint" in answer, answer
        assert b"waypoint-web" in answer, answer
        assert bed.web.seen == []
        assert bed.metric(bed.node_metrics(), "tcp_open_total") == 0


# -- node pod -> sidecar pod ------------------------------------------------------------------


async def _from_front(bed: Bed, path: str, dest: tuple[str, int] = (API_VIP, 80)) -> bytes:
    """One request from the node pod front-0 (on n2) to ``dest``, through n2's proxy."""
    assert bed.node is not None
    bed.node.ctx.sidecar_hbone_port = lambda _ip: bed.hbone_port("api-0")
    reader, writer = await bed.steered(dest)
    writer.write(get(path, close=True))
    try:
        async with asyncio.timeout(5):
            return await read_response(reader)
    finally:
        writer.close()


@uv
async def test_a_node_pod_reaches_a_sidecar_pod_over_hbone_as_itself(tmp_path: Path) -> None:
    policies = [deny("no-admin", principals=[FRONT_ID], paths=["/admin"], app="api")]
    async with hbone_bed(tmp_path, policies=policies) as bed:
        ok = await _from_front(bed, "/x")
        again = await _from_front(bed, "/y")
        denied = await _from_front(bed, "/admin")
        assert ok.startswith(b"HTTP/1.1 200") and again.startswith(b"HTTP/1.1 200"), ok
        # L7 policy at the sidecar: a 403 naming the policy, not a closed connection
        assert denied.startswith(b"HTTP/1.1 403") and b"default/no-admin" in denied, denied
        seen = bed.api.seen
        assert [r.path for r in seen] == ["/x", "/y"]
        assert seen[0].headers.get("x-hm-peer-identity") == FRONT_ID
        assert bed.node is not None and bed.node.ctx.pool.dials == 1  # one tunnel, reused
        # both ends proved an SVID: each trusts the other's heads (trust_peer), as sidecars do
        hbone = next(s for s in bed.workers["api-0"]._servers if isinstance(s, HboneListener))
        assert hbone.server is not None and [c.trusted for c in hbone.server._conns] == [True]
        assert [c.trusted for cs in bed.node.ctx.pool._conns.values() for c in cs] == [True]
        api = bed.workers["api-0"].exposition().decode()
        assert bed.metric(api, "request_total", reporter="destination",
                          source_principal=FRONT_ID) == 3, api
        node = bed.node_metrics()
        assert bed.metric(node, "tcp_open_total", reporter="source",
                          destination_principal="spiffe://cluster.local/ns/default/sa/api"
                          ) == 3, node


def _with_imposter(bed: Bed) -> list[dict[str, Any]]:
    """A Service whose endpoint claims api-0's address but another service account."""
    fake = [endpoint("side-0", API_IP, service_account="side", node="n1")]
    return [*Bed.services(bed), service("fake", FAKE_VIP, [(80, bed.api.port)], fake)]


@uv
async def test_a_sidecar_that_is_not_the_endpoints_identity_gets_nothing(tmp_path: Path) -> None:
    async with hbone_bed(tmp_path) as bed:
        bed.services = functools.partial(_with_imposter, bed)  # type: ignore[method-assign]
        bed.publish()
        assert bed.node is not None
        async with asyncio.timeout(10):
            while (view := bed.node.ctx.view) is None or (FAKE_VIP, 80) not in view.vips:
                await asyncio.sleep(0.02)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):  # closed
            answer = await _from_front(bed, "/secret", (FAKE_VIP, 80))
            assert answer == b"", answer
        assert bed.api.seen == []
        assert bed.node.ctx.metrics.refused("tunnel-peer-auth") == 1
