"""HTTP/2 through the engine on loopback: h2c clients (curl, h2load), an h2 app, gRPC-shaped
trailers, and the HTTP/1.1→HTTP/2 upgrade between two meshed proxies (client proxy A →
server proxy B → app)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvloop
from proxy_harness import (
    POD,
    VIP,
    H2App,
    Harness,
    free_port,
    get,
    metric,
    read_response,
    running_proxy,
    start_backends,
    start_h2_app,
)

from hybridmesh.proxy.testing import endpoint, pod_snapshot, service
from hybridmesh.proxy.worker import Worker

PEER_IP = "127.0.0.3"


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def mesh_services(peer_port: int, app_protocol: str | None = None) -> list[dict[str, Any]]:
    ports = [(80, peer_port, app_protocol)] if app_protocol else [(80, peer_port)]
    return [service("web", VIP, ports, [endpoint("web-0", PEER_IP, placement="sidecar")])]


@contextlib.asynccontextmanager
async def two_proxies(tmp_path: Path, app_port: int, *, upgrade: bool,
                      app_protocol: str | None = None) -> AsyncIterator[tuple[Harness, Worker]]:
    """Proxy A (outbound, the harness) → proxy B (inbound on 127.0.0.3) → app on 127.0.0.2."""
    peer_port = free_port(PEER_IP)
    services = mesh_services(peer_port, app_protocol)
    async with running_proxy(tmp_path, services, upgrade_h2=upgrade) as a:
        a.cp.set("default/web-0", pod_snapshot("web-0", PEER_IP, services,
                                               labels={"app": "web"}))
        config = replace(a.worker.config, pod="web-0", bind_host=PEER_IP,
                         inbound_port=peer_port, outbound_port=0)
        b = Worker(config, original_dst=lambda _s, _d: ("127.0.0.2", app_port))
        await b.start()
        try:
            await b.wait_ready(5)
            yield a, b
        finally:
            await b.close()


async def curl_h2(url: str, *args: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--http2-prior-knowledge", "--max-time", "5", "-i", *args, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return int(out.split(b" ", 2)[1]), out


def test_upgrade_carries_http1_as_h2_streams_between_proxies(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with two_proxies(tmp_path, backends[0].port, upgrade=True) as (a, b):
            readers = [await a.open() for _ in range(4)]
            for round_ in range(5):
                for i, (_, writer) in enumerate(readers):
                    writer.write(get(f"/c{i}r{round_}"))
                for i, (reader, _) in enumerate(readers):
                    resp = await asyncio.wait_for(read_response(reader), 5)
                    assert resp.startswith(b"HTTP/1.1 200 ")
                    assert resp.endswith(f"ok GET /c{i}r{round_} 0\n".encode())
            for _, writer in readers:
                writer.close()
            assert a.worker.ctx.h2pool.opened == 1  # 20 requests, 4 clients, one connection
            assert a.worker.ctx.pool.opened == 0
            assert all("hm-orig-proto" not in r.headers for r in backends[0].seen)
            assert metric(b, "request_total",
                          reporter="destination", response_code="200") == 20
        await backends[0].stop()

    run(main())


def test_without_upgrade_proxies_talk_http1(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with two_proxies(tmp_path, backends[0].port, upgrade=False) as (a, _b):
            resp = await a.exchange(get("/plain", close=True))
            assert resp.startswith(b"HTTP/1.1 200 ")
            assert a.worker.ctx.h2pool.opened == 0 and a.worker.ctx.pool.opened == 1
        await backends[0].stop()

    run(main())


def test_h2c_client_reaches_an_h2_app_through_both_proxies(tmp_path: Path) -> None:
    async def main() -> None:
        server, app_port = await start_h2_app()
        H2App.seen.clear()
        async with two_proxies(tmp_path, app_port, upgrade=False) as (a, b):
            url = f"http://127.0.0.1:{a.port}/svc.Echo/Say"
            status, out = await curl_h2(url, "-H", "content-type: application/grpc",
                                        "--data-binary", "hello")
            assert status == 200 and b"\r\n\r\nh2 POST /svc.Echo/Say 5" in out
            assert b"grpc-status: 0" in out  # trailers made it through both hops
            assert H2App.seen[0][0] == b"POST"
            assert metric(a.worker, "request_total", request_protocol="grpc",
                          grpc_response_status="0", reporter="source") == 1
            assert metric(b, "request_total", request_protocol="grpc",
                          reporter="destination") == 1
        server.close()

    run(main())


def test_h2load_many_streams_on_one_connection(tmp_path: Path) -> None:
    async def main() -> None:
        server, app_port = await start_h2_app()
        async with two_proxies(tmp_path, app_port, upgrade=False) as (a, _b):
            proc = await asyncio.create_subprocess_exec(
                "h2load", "-n", "400", "-c", "2", "-m", "20", f"http://127.0.0.1:{a.port}/x",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            text = out.decode()
            assert "400 succeeded, 0 failed, 0 errored" in text, text[-600:]
            assert "status codes: 400 2xx" in text, text[-600:]
            assert metric(a.worker, "request_total", response_code="200") == 400
        server.close()

    run(main())


def test_h2_client_gets_proxy_errors_as_h2_responses(tmp_path: Path) -> None:
    async def main() -> None:
        empty = service("web", VIP, [(80, 8080)], [])
        async with running_proxy(tmp_path, [empty]) as h:
            status, out = await curl_h2(f"http://127.0.0.1:{h.port}/nothing")
            assert status == 503
            assert b"hm-proxy-error: no-endpoints" in out and POD.encode() in out

    run(main())


def test_mesh_h2_upgrade_policy_turns_the_upgrade_on_live(tmp_path: Path) -> None:
    """MeshConfig ``h2UpgradePolicy: UPGRADE`` (the snapshot's ``mesh``) does what
    ``--upgrade-h2`` does, without a restart; DO_NOT_UPGRADE (the default) keeps HTTP/1.1."""
    async def main() -> None:
        backends = await start_backends(1)
        async with two_proxies(tmp_path, backends[0].port, upgrade=False) as (a, b):
            services = mesh_services(b.inbound_port)

            async def one(path: str) -> None:
                reader, writer = await a.open()
                writer.write(get(path))
                resp = await asyncio.wait_for(read_response(reader), 5)
                assert resp.startswith(b"HTTP/1.1 200 ")
                writer.close()

            await one("/before")
            assert a.worker.ctx.h2pool_if_made is None  # HTTP/1.1 between the proxies
            snap = pod_snapshot("client-0", "127.0.0.1", services)
            snap["mesh"]["h2UpgradePolicy"] = "UPGRADE"
            await a.wait_version(a.cp.set("default/client-0", snap))
            await one("/after")
            assert a.worker.ctx.h2pool.opened == 1  # now an HTTP/2 stream to the peer proxy
            assert all("hm-orig-proto" not in r.headers for r in backends[0].seen)
            assert [r.path for r in backends[0].seen] == ["/before", "/after"]
        await backends[0].stop()

    run(main())
