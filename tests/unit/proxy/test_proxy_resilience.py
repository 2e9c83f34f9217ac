"""Retries, the retry budget, outlier ejection and balancing through a real worker."""

from __future__ import annotations

import itertools
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvloop
from proxy_harness import (
    get,
    ok,
    read_response,
    running_proxy,
    start_backends,
    start_group,
    web_service,
)

from hybridmesh._http import Request, Response


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def retry_route(codes: list[int], attempts: int) -> dict[str, Any]:
    return {"name": "default/retry", "service": "default/web", "port": None, "hostnames": [],
            "rules": [{"matches": [], "backends": [],
                       "timeouts": {"requestMs": None, "backendRequestMs": None},
                       "retry": {"codes": codes, "attempts": attempts, "backoffMs": 1}}]}


def test_retryable_status_is_held_and_retried_on_another_endpoint(tmp_path: Path) -> None:
    async def fail(req: Request) -> Response:
        return Response.text("boom\n", 500)

    async def main() -> None:
        bad, good = await start_group(fail, ok)
        svc = web_service([bad, good], bad.port)
        async with running_proxy(tmp_path, [svc], [retry_route([500], 2)]) as h:
            reader, writer = await h.open()
            for i in range(40):
                writer.write(get(f"/{i}"))
                resp = await read_response(reader)
                assert resp.startswith(b"HTTP/1.1 200 "), resp
            writer.close()
            assert bad.seen, "P2C never tried the failing endpoint: the test proves nothing"
            assert h.metric("retry_total") == len(bad.seen)
            assert h.metric("request_total", response_code="500") == 0
        await bad.stop()
        await good.stop()

    run(main())


def test_non_retryable_status_is_forwarded_as_is(tmp_path: Path) -> None:
    async def fail(req: Request) -> Response:
        return Response.text("app said no\n", 500)

    async def main() -> None:
        backends = await start_backends(1, fail)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            resp = await h.exchange(get("/x", close=True))
            assert resp.startswith(b"HTTP/1.1 500 ") and resp.endswith(b"app said no\n")
            assert b"hm-proxy-error" not in resp
            assert len(backends[0].seen) == 1  # default policy retries 503 only
        await backends[0].stop()

    run(main())


def test_post_with_buffered_body_is_replayed_whole(tmp_path: Path) -> None:
    counter = itertools.count()

    async def flaky(req: Request) -> Response:
        if next(counter) == 0:
            return Response.text("unavailable\n", 503)
        return Response.text(f"got {req.body.decode()}\n")

    async def main() -> None:
        backends = await start_backends(1, flaky)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)]) as h:
            raw = b"POST /p HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello"
            resp = await h.exchange(raw, read_until_close=False)
            assert resp.startswith(b"HTTP/1.1 200 ") and resp.endswith(b"got hello\n")
            assert [r.body for r in backends[0].seen] == [b"hello", b"hello"]
        await backends[0].stop()

    run(main())


def test_retry_budget_caps_retries_under_total_failure(tmp_path: Path) -> None:
    async def down(req: Request) -> Response:
        return Response.text("unavailable\n", 503)

    async def main() -> None:
        backends = await start_backends(3, down)
        async with running_proxy(tmp_path, [web_service(backends, backends[0].port)],
                                 [retry_route([503], 3)]) as h:
            reader, writer = await h.open()
            n = 300
            for i in range(n):
                writer.write(get(f"/{i}"))
                resp = await read_response(reader)
                assert resp.startswith(b"HTTP/1.1 503 ")
            writer.close()
            sent = sum(len(b.seen) for b in backends)
            # budget: 20% of requests + a floor of 10/s over 10 s = 60 + 100 retries at most
            assert h.metric("retry_total") <= 0.2 * n + 100
            assert sent == n + h.metric("retry_total")
            assert h.metric("retry_budget_exhausted_total") > 0
        for b in backends:
            await b.stop()

    run(main())


def test_failing_endpoints_are_ejected_but_never_more_than_half(tmp_path: Path) -> None:
    async def fail(req: Request) -> Response:
        return Response.text("boom\n", 500)

    async def main() -> None:
        # P2C alone steers around one bad endpoint (a failure costs the penalty RTT), so
        # ejection is what stops a pool where *every* choice is bad from being hammered.
        a, b = await start_group(fail, fail)
        async with running_proxy(tmp_path, [web_service([a, b], a.port)]) as h:
            reader, writer = await h.open()
            for i in range(40):
                writer.write(get(f"/{i}"))
                assert (await read_response(reader)).startswith(b"HTTP/1.1 500 ")
            writer.close()
            assert h.metric("outlier_ejections_total") == 1
            ejected = h.worker.ctx.balancers.snapshot()["default/web:80"]["ejected"]
            assert len(ejected) == 1
            kept = b if ejected == [f"127.0.0.2:{a.port}"] else a
            assert len(kept.seen) >= 40 - 10  # after ejection everything went to the other
        await a.stop()
        await b.stop()

    run(main())


def test_new_snapshot_changes_endpoints_without_dropping_balancer_state(tmp_path: Path) -> None:
    async def main() -> None:
        backends = await start_backends(2)
        a, b = backends
        async with running_proxy(tmp_path, [web_service([a], a.port)]) as h:
            for _ in range(5):
                await h.exchange(get("/", close=True))
            bal = h.worker.ctx.balancers.get("default/web", 80)
            assert bal is not None
            before = bal.lb.snapshot()
            h.publish([web_service([a, b], a.port)])
            await h.wait_version(2)
            assert h.worker.ctx.balancers.get("default/web", 80) is bal
            after = bal.lb.snapshot()
            key = f"127.0.0.2:{a.port}"
            assert before[key]["sampled"] == after[key]["sampled"] == 1.0  # the estimate stayed
            assert after[f"127.0.0.3:{a.port}"]["sampled"] == 0.0
            for _ in range(20):
                await h.exchange(get("/", close=True))
            assert len(b.seen) > 0
        for x in backends:
            await x.stop()

    run(main())


def test_keep_alive_connection_follows_a_new_route_between_requests(tmp_path: Path) -> None:
    from proxy_harness import Backend

    from hybridmesh.proxy.testing import endpoint, service

    async def main() -> None:
        (web,) = await start_backends(1)
        api = Backend("127.0.0.5", ok)
        await api.start()
        api_svc = service("api", "10.96.0.11", [(80, api.port)], [endpoint("api-0", api.ip)])
        svcs = [web_service([web], web.port), api_svc]
        async with running_proxy(tmp_path, svcs) as h:
            reader, writer = await h.open()
            writer.write(get("/before"))
            await read_response(reader)
            shift = {"name": "default/shift", "service": "default/web", "port": None,
                     "hostnames": [], "rules": [{"matches": [], "backends": [
                         {"service": "default/api", "port": 80, "weight": 1}],
                         "timeouts": {"requestMs": None, "backendRequestMs": None},
                         "retry": None}]}
            h.publish(svcs, [shift])
            await h.wait_version(2)
            writer.write(get("/after"))
            await read_response(reader)
            writer.close()
            assert [r.path for r in web.seen] == ["/before"]
            assert [r.path for r in api.seen] == ["/after"]
        await web.stop()
        await api.stop()

    run(main())
