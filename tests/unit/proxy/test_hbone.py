"""HBONE in the sidecar engine (issue 6): sidecar -> node pod through its node proxy, HBONE
inbound to a sidecar, and the waypoint's L7 on a ``node`` Service (loopback, no privileges)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hbone_harness import (
    API_IP,
    CLIENT_ID,
    FRONT_ID,
    PLAIN_VIP,
    VIP,
    WAYPOINT_ID,
    WAYPOINT_IP,
    WEB_IP,
    Bed,
    deny,
    hbone_bed,
)
from proxy_harness import H2App, get, read_response, start_h2_app

pytestmark = pytest.mark.timeout(60)


def uv(case: Callable[[Path], Coroutine[Any, Any, None]]) -> Callable[[Path], None]:
    """Run the async test body on uvloop (the proxy's loop)."""

    @functools.wraps(case)
    def run(tmp_path: Path) -> None:
        uvloop.run(case(tmp_path))

    return run


@uv
async def test_sidecar_reaches_a_node_pod_through_its_node_proxy_as_itself(tmp_path: Path) -> None:
    async with hbone_bed(tmp_path) as bed:
        first = await bed.request(get("/a"))
        second = await bed.request(get("/b"))
        assert first.startswith(b"HTTP/1.1 200") and b"ok GET /a" in first, first
        assert second.startswith(b"HTTP/1.1 200"), second
        mesh = bed.workers["client-0"].ctx.mtls
        assert mesh is not None
        assert mesh.hbone.tunnels == 1  # one tunnel to n2, reused
        assert mesh.hbone.streams >= 1
        # the node proxy proved an SVID to the sidecar and the sidecar one to it: both trusted
        assert [c.trusted for cs in mesh.hbone._pool._conns.values() for c in cs] == [True]
        assert bed.node is not None and [c.trusted for c in bed.node._tunnels] == [True]
        # the destination node proxy saw the sidecar's own identity, not a plaintext peer
        text = bed.node_metrics()
        assert bed.metric(text, "tcp_open_total", source_principal=CLIENT_ID) >= 1, text
        assert [r.path for r in bed.web.seen] == ["/a", "/b"]


@uv
async def test_a_deny_at_the_node_pod_refuses_the_sidecar_with_403(tmp_path: Path) -> None:
    async with hbone_bed(tmp_path, node_policies=[deny("no-client", principals=[CLIENT_ID])]
                         ) as bed:
        answer = await bed.request(get("/"))
        assert answer.startswith(b"HTTP/1.1 403"), answer
        assert b"policy" in answer
        assert bed.web.seen == []


@uv
async def test_opaque_tcp_to_a_node_pod_goes_through_the_tunnel(tmp_path: Path) -> None:
    async with hbone_bed(tmp_path, web_protocol="tcp") as bed:
        answer = await bed.request(get("/raw", close=True))
        assert answer.startswith(b"HTTP/1.1 200"), answer
        mesh = bed.workers["client-0"].ctx.mtls
        assert mesh is not None and mesh.hbone.streams == 1


@uv
async def test_hbone_inbound_is_authorized_as_the_tunnel_identity(tmp_path: Path) -> None:
    policies = [deny("no-admin", principals=[CLIENT_ID], paths=["/admin"], app="api")]
    async with hbone_bed(tmp_path, policies=policies) as bed:
        api_port = bed.api.port
        answers = []
        for path in ("/", "/admin"):
            opened = await bed.stream(API_IP, "api-0", (API_IP, api_port),
                                      expected="spiffe://cluster.local/ns/default/sa/api")
            assert not isinstance(opened, str), opened
            reader, writer = opened
            writer.write(get(path))
            answers.append(await read_response(reader))
            writer.close()
        assert answers[0].startswith(b"HTTP/1.1 200"), answers[0]
        assert answers[1].startswith(b"HTTP/1.1 403") and b"default/no-admin" in answers[1]
        seen = bed.api.seen
        assert [r.path for r in seen] == ["/"]
        assert seen[0].headers.get("x-hm-peer-identity") == CLIENT_ID  # the tunnel's identity


@uv
async def test_hbone_refuses_what_is_not_this_pod(tmp_path: Path) -> None:
    async with hbone_bed(tmp_path) as bed:
        refused = await bed.stream(API_IP, "api-0", (WEB_IP, bed.web.port),
                                   expected="spiffe://cluster.local/ns/default/sa/api")
        assert refused == "not-local"
        # a waypoint serves only its own Service's cluster IP
        refused = await bed.stream(WAYPOINT_IP, "waypoint-web-0", ("10.96.0.11", 80),
                                   expected=WAYPOINT_ID)
        assert refused == "not-local"


async def _via_waypoint(bed: Bed, path: str) -> bytes:
    opened = await bed.stream(WAYPOINT_IP, "waypoint-web-0", (VIP, 80), expected=WAYPOINT_ID)
    assert not isinstance(opened, str), opened
    reader, writer = opened
    writer.write(get(path))
    try:
        return await read_response(reader)
    finally:
        writer.close()


@uv
async def test_waypoint_applies_l7_policy_with_the_callers_identity(tmp_path: Path) -> None:
    policies = [deny("no-admin", paths=["/admin"])]
    async with hbone_bed(tmp_path, policies=policies) as bed:
        ok = await _via_waypoint(bed, "/x")
        denied = await _via_waypoint(bed, "/admin")
        assert ok.startswith(b"HTTP/1.1 200") and b"ok GET /x" in ok, ok
        assert denied.startswith(b"HTTP/1.1 403") and b"default/no-admin" in denied, denied
        assert [r.path for r in bed.web.seen] == ["/x"]
        # onward through n2 as the waypoint's own identity
        text = bed.node_metrics()
        assert bed.metric(text, "tcp_open_total", source_principal=WAYPOINT_ID) >= 1, text
        waypoint = bed.workers["waypoint-web-0"].exposition().decode()
        assert bed.metric(waypoint, "request_total", reporter="waypoint",
                          source_principal=CLIENT_ID) == 2, waypoint


@uv
async def test_a_node_pod_reaches_a_waypointed_service_through_its_waypoint(
        tmp_path: Path) -> None:
    policies = [deny("no-admin", paths=["/admin"])]
    async with hbone_bed(tmp_path, policies=policies, waypoint=True) as bed:
        answers = []
        for path in ("/via", "/admin"):
            reader, writer = await bed.steered()
            writer.write(get(path))
            answers.append(await read_response(reader))
            writer.close()
        assert answers[0].startswith(b"HTTP/1.1 200") and b"ok GET /via" in answers[0]
        assert answers[1].startswith(b"HTTP/1.1 403") and b"default/no-admin" in answers[1]
        waypoint = bed.workers["waypoint-web-0"].exposition().decode()
        # the waypoint judged the node pod's identity (the tunnel's), not its node proxy's
        assert bed.metric(waypoint, "request_total", reporter="waypoint",
                          source_principal=FRONT_ID) == 2, waypoint
        assert [r.path for r in bed.web.seen] == ["/via"]


@uv
async def test_l4_only_services_are_not_sent_to_a_waypoint(tmp_path: Path) -> None:
    async with hbone_bed(tmp_path, waypoint=True) as bed:
        reader, writer = await bed.steered((PLAIN_VIP, 80))  # same pod, no waypoint
        writer.write(get("/direct"))
        answer = await read_response(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        waypoint = bed.workers["waypoint-web-0"].exposition().decode()
        assert bed.metric(waypoint, "request_total") == 0


@uv
async def test_grpc_to_a_node_pod_rides_http2_streams_through_the_tunnel(tmp_path: Path) -> None:
    server, port = await start_h2_app(WEB_IP)
    H2App.seen.clear()
    try:
        async with hbone_bed(tmp_path, h2_port=port) as bed:
            url = f"http://127.0.0.1:{bed.workers['client-0'].outbound_port}/svc.Echo/Say"
            proc = await asyncio.create_subprocess_exec(
                "curl", "-sS", "--http2-prior-knowledge", "--max-time", "5", "-i",
                "-H", "content-type: application/grpc", "--data-binary", "hello", url,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0, err
            assert out.startswith(b"HTTP/2 200") and b"h2 POST /svc.Echo/Say 5" in out, out
            assert b"grpc-status: 0" in out  # trailers came back through the stream
            assert H2App.seen[0][:2] == (b"POST", b"/svc.Echo/Say")
            mesh = bed.workers["client-0"].ctx.mtls
            assert mesh is not None and mesh.hbone.streams == 1
    finally:
        server.close()
