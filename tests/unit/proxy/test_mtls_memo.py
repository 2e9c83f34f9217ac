"""What the mTLS path remembers between requests (the upstream choice per snapshot, the
authz decision per peer) must never outlive what it depends on: our SVID's validity is
checked on every request, and a policy or naming change applies to the next request on an
established, pooled mTLS connection."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvloop
from mtls_harness import CLIENT_ID, mesh_pair
from test_proxy_authz import ALLOW_CLIENT_GET, ALLOW_OTHER, wait_policies

from hybridmesh.proxy.mtls import MeshTls


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def test_expired_svid_fails_closed_although_the_choice_is_remembered(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path) as p:
            mesh = p.client.ctx.mtls
            assert isinstance(mesh, MeshTls)
            assert (await p.get("/a")).startswith(b"HTTP/1.1 200 ")  # remembered now
            clock = mesh.identity._clock
            mesh.identity._clock = lambda: 1e12  # past not_after
            try:
                resp = await p.get("/b")
            finally:
                mesh.identity._clock = clock
            assert resp.startswith(b"HTTP/1.1 503 "), resp
            assert b"hm-proxy-error: no-identity" in resp
            assert (await p.get("/c")).startswith(b"HTTP/1.1 200 ")
            assert [r.path for r in p.app.seen] == ["/a", "/c"]

    run(main())


def test_policy_changes_apply_on_the_same_mtls_connection(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, publish={"policies": [ALLOW_CLIENT_GET]}) as p:
            await wait_policies(p, ("default/allow-client",))
            for _ in range(3):
                assert (await p.get("/x")).startswith(b"HTTP/1.1 200 ")
            p.publish(policies=[ALLOW_OTHER])
            await wait_policies(p, ("default/allow-other",))
            resp = await p.get("/x")
            assert resp.startswith(b"HTTP/1.1 403 "), resp
            p.publish(policies=[ALLOW_CLIENT_GET])
            await wait_policies(p, ("default/allow-client",))
            assert (await p.get("/x")).startswith(b"HTTP/1.1 200 ")
            mesh = p.client.ctx.mtls
            assert mesh is not None and mesh.handshakes == 1  # one connection throughout
            assert [r.headers["x-hm-peer-identity"] for r in p.app.seen] == [CLIENT_ID] * 4

    run(main())
