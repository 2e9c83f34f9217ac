"""Worker lifecycle: readiness, drain with in-flight requests, pod deletion, admin API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvloop
from proxy_harness import POD, get, read_response, running_proxy, start_backends, web_service

from hybridmesh._http import HttpClient, Request, Response
from hybridmesh.proxy.admin import start_admin
from hybridmesh.proxy.server import _worker_source


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def test_drain_finishes_in_flight_requests_and_refuses_new_ones(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow(req: Request) -> Response:
        if req.path == "/slow":
            await release.wait()
        return Response.text("finished\n")

    async def main() -> None:
        backends = await start_backends(1, slow)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            idle_r, idle_w = await h.open()  # a keep-alive client between requests: closed at once
            idle_w.write(get("/first"))
            await read_response(idle_r)
            reader, writer = await h.open()
            writer.write(get("/slow"))
            await asyncio.sleep(0.05)
            h.worker.request_drain()
            assert await asyncio.wait_for(idle_r.read(-1), 2) == b""
            assert not h.worker.ready
            release.set()
            resp = await asyncio.wait_for(read_response(reader), 2)
            assert resp.startswith(b"HTTP/1.1 200 ") and resp.endswith(b"finished\n")
            assert b"connection: close" in resp.lower()
            await asyncio.wait_for(h.worker.wait_stopped(), 3)
            try:
                await asyncio.open_connection("127.0.0.1", h.port)
            except OSError:
                pass
            else:
                raise AssertionError("the listener still accepts after the drain")
            writer.close()
            idle_w.close()
        await backends[0].stop()

    run(main())


def test_drain_aborts_what_outlives_the_grace_period(tmp_path: Path) -> None:
    async def never(req: Request) -> Response:
        await asyncio.sleep(30)
        return Response.text("too late\n")

    async def main() -> None:
        backends = await start_backends(1, never)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)],
                                 drain_grace_s=0.2) as h:
            reader, writer = await h.open()
            writer.write(get("/hang"))
            await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            h.worker.request_drain()
            await asyncio.wait_for(h.worker.wait_stopped(), 3)
            assert loop.time() - t0 < 1.0
            assert await asyncio.wait_for(reader.read(-1), 2) == b""
            writer.close()
        await backends[0].stop()

    run(main())


def test_pod_deleted_from_the_control_plane_drains_the_worker(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_proxy(tmp_path, [], watch_timeout_s=0.2) as h:
            h.cp.delete(POD)
            await asyncio.wait_for(h.worker.wait_stopped(), 3)
            assert h.worker.deleted

    run(main())


def test_admin_ready_metrics_and_config_dump(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            await h.exchange(get("/", close=True))
            admin, port = await start_admin(_worker_source(h.worker), host="127.0.0.1")
            async with HttpClient(f"http://127.0.0.1:{port}") as client:
                ready = await client.request("GET", "/ready")
                assert ready.status == 200
                metrics = await client.request("GET", "/metrics")
                assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
                assert b'request_total{' in metrics.body
                dump = json.loads((await client.request("GET", "/config_dump")).body)
                assert dump["proxy"] == POD
                assert dump["tables"]["derived"]["endpoints"] == {"default/web": ["127.0.0.2"]}
                assert "default/web:80" in dump["balancers"]
                assert (await client.request("POST", "/shutdown")).status == 200
                await asyncio.wait_for(h.worker.wait_stopped(), 3)
                assert (await client.request("GET", "/ready")).status == 503
            await admin.close(timeout=0.5)
        await backends[0].stop()

    run(main())


def test_not_ready_until_the_control_plane_answers(tmp_path: Path) -> None:
    from hybridmesh.proxy.config import ProxyConfig
    from hybridmesh.proxy.testing import FakeControlPlane, pod_snapshot
    from hybridmesh.proxy.worker import Worker

    async def main() -> None:
        sock = tmp_path / "cp.sock"
        config = ProxyConfig(namespace="default", pod="late-0", control_socket=str(sock),
                             outbound_port=0, inbound_port=0, bind_host="127.0.0.1", mark=None)
        worker = Worker(config)
        await worker.start()  # the control plane is not there yet: the watch retries
        await asyncio.sleep(0.2)
        assert not worker.ready
        # a connection accepted before any snapshot is refused rather than misrouted
        reader, writer = await asyncio.open_connection("127.0.0.1", worker.outbound_port)
        assert await asyncio.wait_for(reader.read(-1), 2) == b""
        writer.close()
        cp = FakeControlPlane(sock)
        cp.set("default/late-0", pod_snapshot("late-0", "127.0.0.1"))
        await cp.start()
        await worker.wait_ready(5)
        assert worker.ctx.tables is not None and worker.ctx.tables.pod.name == "late-0"
        await worker.close()
        await cp.close()

    run(main())
