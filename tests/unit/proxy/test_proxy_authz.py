"""AuthorizationPolicy enforced by the inbound proxy: verified peers, 403 naming the policy,
default-deny, one normalized path for matching and forwarding, live policy changes, metrics
and access-log fields, denied TCP closed."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvloop
from mtls_harness import CLIENT_ID, SERVER_IP, Pair, mesh_pair

from hybridmesh.telemetry.proxy_metrics import AccessLog


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def policy(name: str, action: str, rules: list[dict[str, Any]],
           selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"action": action, "rules": rules}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    return {"apiVersion": "hybridmesh.io/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


DENY_ADMIN = policy("deny-admin", "DENY", [{"to": [{"operation": {"paths": ["/admin",
                                                                          "/admin/*"]}}]}])
ALLOW_OTHER = policy("allow-other", "ALLOW", [{"from": [{"source": {"principals": [
    "spiffe://cluster.local/ns/default/sa/other"]}}]}])
ALLOW_CLIENT_GET = policy("allow-client", "ALLOW", [{
    "from": [{"source": {"principals": [CLIENT_ID]}}],
    "to": [{"operation": {"methods": ["GET"]}}]}])


async def wait_policies(p: Pair, names: tuple[str, ...]) -> None:
    async with asyncio.timeout(5):
        while p.server.ctx.policy is None or p.server.ctx.policy.policies != names:
            await asyncio.sleep(0.01)


def body(resp: bytes) -> str:
    return resp.partition(b"\r\n\r\n")[2].decode()


def test_deny_names_the_policy_and_the_app_sees_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, publish={"policies": [DENY_ADMIN]}) as p:
            await wait_policies(p, ("default/deny-admin",))
            resp = await p.get("/admin/x")
            assert resp.startswith(b"HTTP/1.1 403 "), resp
            assert "RBAC: access denied by policy default/deny-admin" in body(resp)
            assert b"hm-proxy-error: policy" in resp
            assert (await p.get("/public")).startswith(b"HTTP/1.1 200 ")
            assert [r.path for r in p.app.seen] == ["/public"]
            assert p.metric(p.server, "authz_decisions_total", decision="deny",
                            policy="default/deny-admin", protocol="http") == 1
            assert p.metric(p.server, "authz_decisions_total", decision="allow",
                            policy="none") == 1
            assert p.metric(p.server, "request_total", reporter="destination",
                            response_code="403", response_flags="RBAC",
                            source_principal=CLIENT_ID) == 1

    run(main())


def test_valid_identity_that_no_allow_matches_gets_default_deny(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, publish={"policies": [ALLOW_OTHER]}) as p:
            await wait_policies(p, ("default/allow-other",))
            resp = await p.get("/")
            assert resp.startswith(b"HTTP/1.1 403 "), resp
            assert "RBAC: access denied: no ALLOW policy matched" in body(resp)
            assert "default/allow-other" in body(resp)
            assert p.app.seen == []
            assert p.metric(p.server, "authz_decisions_total", decision="deny",
                            policy="default") == 1

    run(main())


def test_allow_by_verified_principal_and_method(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, publish={"policies": [ALLOW_CLIENT_GET]}) as p:
            await wait_policies(p, ("default/allow-client",))
            assert (await p.get("/x")).startswith(b"HTTP/1.1 200 ")
            post = b"POST /x HTTP/1.1\r\nHost: web\r\ncontent-length: 0\r\n\r\n"
            assert (await p.request(post)).startswith(b"HTTP/1.1 403 ")
            assert p.metric(p.server, "authz_decisions_total", decision="allow",
                            policy="default/allow-client") == 1

    run(main())


def test_policies_change_live_without_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path) as p:
            assert (await p.get("/admin")).startswith(b"HTTP/1.1 200 ")
            p.publish(policies=[DENY_ADMIN])
            await wait_policies(p, ("default/deny-admin",))
            assert (await p.get("/admin")).startswith(b"HTTP/1.1 403 ")
            p.publish(policies=[])
            await wait_policies(p, ())
            assert (await p.get("/admin")).startswith(b"HTTP/1.1 200 ")
            assert [r.path for r in p.app.seen] == ["/admin", "/admin"]

    run(main())


def test_the_app_receives_the_path_that_was_matched(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, publish={"policies": [DENY_ADMIN]}) as p:
            await wait_policies(p, ("default/deny-admin",))
            cases = {"/public/../admin": 403, "//admin": 403, "/./admin": 403,
                     "/%61dmin": 403, "/admin;x": 403, "/ADMIN": 403, "/admin%2Fx": 400,
                     "/x/%2e%2e/admin": 403, "/a//b/./c/../d?q=1": 200, "/%7Euser": 200}
            for path, status in cases.items():
                resp = await p.get(path)
                assert resp.startswith(f"HTTP/1.1 {status} ".encode()), (path, resp)
            assert [(r.path, r.query) for r in p.app.seen] == [("/a/b/d", "q=1"), ("/~user", "")]

    run(main())


def test_denied_tcp_is_closed_before_the_app_is_reached(tmp_path: Path) -> None:
    deny_port = policy("deny-tcp", "DENY", [{"from": [{"source": {"principals": [CLIENT_ID]}}]}])

    async def main() -> None:
        async with mesh_pair(tmp_path, publish={"policies": [deny_port],
                                                "app_protocol": "tcp"}) as p:
            await wait_policies(p, ("default/deny-tcp",))
            reader, writer = await asyncio.open_connection("127.0.0.1", p.client.outbound_port)
            writer.write(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            async with asyncio.timeout(5):
                data = await reader.read()
            writer.close()
            assert b"200" not in data
            assert p.app.seen == []
            assert p.metric(p.server, "authz_decisions_total", protocol="tcp",
                            decision="deny", policy="default/deny-tcp") == 1

    run(main())


def test_access_log_and_config_dump_carry_the_decision(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, publish={"policies": [DENY_ADMIN]}) as p:
            stream = io.StringIO()
            log = p.server.ctx.access_log = AccessLog(stream)
            await wait_policies(p, ("default/deny-admin",))
            await p.get("/admin")
            await p.get("/ok")
            log.close(timeout=1.0)
            records = [json.loads(line) for line in stream.getvalue().splitlines()]
            assert [(r["path"], r["authz_decision"], r["authz_policy"]) for r in records] == [
                ("/admin", "deny", "default/deny-admin"), ("/ok", "allow", "none")]
            dump = p.server.config_dump()["authz"]
            assert dump["policies"]["direct"] == ["default/deny-admin"]

    run(main())


def test_unusable_policies_fail_closed(tmp_path: Path) -> None:
    broken = policy("broken", "ALLOW", [{"to": [{"operation": {"paths": [7]}}]}])

    async def main() -> None:
        async with mesh_pair(tmp_path) as p:
            p.publish(policies=[broken])
            async with asyncio.timeout(5):
                while p.server.ctx.policy is None or p.server.ctx.policy.describe()[
                        "invalid"] is None:
                    await asyncio.sleep(0.01)
            resp = await p.get("/")
            assert resp.startswith(b"HTTP/1.1 403 ") and "invalid" in body(resp), resp
            assert p.app.seen == []

    run(main())


def test_plaintext_peer_in_permissive_mode_matches_no_principal(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, mode="PERMISSIVE",
                             publish={"policies": [ALLOW_CLIENT_GET]}) as p:
            await wait_policies(p, ("default/allow-client",))
            reader, writer = await asyncio.open_connection(SERVER_IP, p.inbound_port)
            writer.write(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
            assert head.startswith(b"HTTP/1.1 403 "), head
            assert (await p.get("/")).startswith(b"HTTP/1.1 200 ")  # the meshed client is

    run(main())
