"""An h2c client calling a port declared ``appProtocol: http`` (an HTTP/1.1 app, Istio's
meaning) gets its requests translated to HTTP/1.1 for the app, instead of HTTP/2 the app
cannot read (found in the lab: ``h2load http://web/`` answered 502 upstream-reset)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from proxy_harness import VIP, running_proxy, start_backends, web_service
from test_proxy_http2 import curl_h2, run, two_proxies

from hybridmesh.proxy.testing import endpoint, pod_snapshot, service
from hybridmesh.proxy.worker import Worker


def test_h2c_client_to_an_http1_port_is_translated_by_the_outbound_proxy(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        svc = web_service(backends, backends[0].port, app_protocol="http")
        async with running_proxy(tmp_path, [svc]) as h:
            for path in ("/a", "/b"):
                status, out = await curl_h2(f"http://127.0.0.1:{h.port}{path}")
                assert status == 200, out
                assert out.endswith(f"ok GET {path} 0\n".encode())
            assert [r.path for r in backends[0].seen] == ["/a", "/b"]
            assert h.worker.ctx.h2pool.opened == 0
        await backends[0].stop()

    run(main())


def test_h2c_client_to_an_http1_port_is_translated_by_the_inbound_proxy(
    tmp_path: Path,
) -> None:
    """A client without a proxy (placement none) reaching a meshed pod with h2c."""

    async def main() -> None:
        backends = await start_backends(1)
        port = backends[0].port
        svc = service("web", VIP, [(80, port, "http")], [endpoint("web-0", "127.0.0.2")])
        async with running_proxy(tmp_path, [svc]) as a:
            a.cp.set("default/web-0", pod_snapshot("web-0", "127.0.0.2", [svc],
                                                   labels={"app": "web"}))
            config = replace(a.worker.config, pod="web-0", outbound_port=0, inbound_port=0)
            b = Worker(config, original_dst=lambda _s, _d: ("127.0.0.2", port))
            await b.start()
            try:
                await b.wait_ready(5)
                status, out = await curl_h2(f"http://127.0.0.1:{b.inbound_port}/in")
            finally:
                await b.close()
            assert status == 200, out
            assert out.endswith(b"ok GET /in 0\n")
        await backends[0].stop()

    run(main())


@pytest.mark.parametrize("upgrade", [False, True])
def test_h2c_client_to_an_http1_port_through_both_proxies(tmp_path: Path, upgrade: bool) -> None:
    async def main() -> None:
        backends = await start_backends(1)
        async with two_proxies(tmp_path, backends[0].port, upgrade=upgrade,
                               app_protocol="http") as (a, _b):
            status, out = await curl_h2(f"http://127.0.0.1:{a.port}/x")
            assert status == 200, out
            assert out.endswith(b"ok GET /x 0\n")
            # HTTP/1.1 between the proxies too (the upgrade is for HTTP/1.1 clients)
            assert a.worker.ctx.h2pool.opened == 0
            assert all("hm-orig-proto" not in r.headers for r in backends[0].seen)
        await backends[0].stop()

    run(main())
