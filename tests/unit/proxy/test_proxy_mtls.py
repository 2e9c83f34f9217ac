"""mTLS between two proxies on loopback: verified principals, STRICT/PERMISSIVE, secure naming,
identity headers, fail-closed without an identity, pooling."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvloop
from mtls_harness import (
    APP_IP,
    CLIENT_ID,
    SERVER_ID,
    SERVER_IP,
    Pair,
    mesh_pair,
)

from hybridmesh.identity.ca import MeshCA
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.tls import client_context
from hybridmesh.identity.workload import Svid, make_csr, new_key


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def test_meshed_requests_are_mutual_tls_with_verified_principals(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path) as p:
            for i in range(5):
                resp = await p.get(f"/r{i}")
                assert resp.startswith(b"HTTP/1.1 200 "), resp
            assert [r.path for r in p.app.seen] == [f"/r{i}" for i in range(5)]
            assert p.metric(p.server, "identity_connections_total", reporter="destination",
                            connection_security_policy="mutual_tls", source_principal=CLIENT_ID,
                            destination_principal=SERVER_ID) == 1  # one pooled connection
            assert p.metric(p.server, "request_total", reporter="destination",
                            source_principal=CLIENT_ID, destination_principal=SERVER_ID,
                            source_workload="client", response_code="200") == 5
            assert p.metric(p.client, "request_total", reporter="source",
                            destination_principal=SERVER_ID, response_code="200") == 5
            assert p.client.ctx.mtls is not None and p.client.ctx.mtls.handshakes == 1
            assert p.client.ctx.pool.opened == 0  # nothing went plaintext

    run(main())


def test_client_sent_identity_headers_are_replaced_by_the_verified_ones(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path) as p:
            forged = ("x-hm-peer-identity: spiffe://cluster.local/ns/kube-system/sa/admin\r\n"
                      "X-Forwarded-Client-Cert: By=x;URI=spiffe://cluster.local/ns/a/sa/b\r\n")
            assert (await p.get("/h", forged)).startswith(b"HTTP/1.1 200 ")
            headers = p.app.seen[-1].headers
            assert headers.getall("x-hm-peer-identity") == [CLIENT_ID]
            xfcc = headers.getall("x-forwarded-client-cert")
            assert len(xfcc) == 1 and xfcc[0].startswith(f"By={SERVER_ID};Hash=")
            assert xfcc[0].endswith(f";URI={CLIENT_ID}")

    run(main())


async def _raw(ip: str, port: int, payload: bytes, *, ctx: ssl.SSLContext | None = None
               ) -> bytes:
    """Send ``payload`` (over TLS with ``ctx``), read until the server closes."""
    try:
        reader, writer = await asyncio.open_connection(ip, port, ssl=ctx,
                                                       server_hostname="" if ctx else None)
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        writer.write(payload)
        async with asyncio.timeout(5):
            return await reader.read(-1)
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()


GET = b"GET /plain HTTP/1.1\r\nHost: web\r\n\r\n"


def test_strict_refuses_plaintext_and_the_app_sees_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, mode="STRICT") as p:
            assert await _raw(SERVER_IP, p.inbound_port, GET) == b""
            await asyncio.sleep(0.05)
            assert p.app.seen == [] and p.app.connections == 0  # not even connected to
            assert p.metric(p.server, "identity_connections_refused_total",
                            reason="plaintext-strict") == 1

    run(main())


def test_permissive_accepts_plaintext_without_principal_and_strips_headers(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, mode="PERMISSIVE") as p:
            forged = GET.replace(b"\r\n\r\n", b"\r\nx-hm-peer-identity: spiffe://evil/x\r\n"
                                 b"Connection: close\r\n\r\n")
            answer = await _raw(SERVER_IP, p.inbound_port, forged)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert p.app.seen[-1].headers.getall("x-hm-peer-identity") == []
            assert p.metric(p.server, "identity_connections_total",
                            connection_security_policy="none") == 1
            assert p.metric(p.server, "request_total", reporter="destination",
                            source_principal="unknown", response_code="200") == 1
            assert (await p.get("/m")).startswith(b"HTTP/1.1 200 ")  # mTLS still used
            assert p.metric(p.server, "identity_connections_total",
                            connection_security_policy="mutual_tls") == 1

    run(main())


def _tls_client(ca: MeshCA | None, *, bundle_pem: bytes, sa: str = "intruder"
                ) -> ssl.SSLContext:
    """A TLS 1.3 client trusting ``bundle_pem``, presenting a cert from ``ca`` (None: none)."""
    if ca is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(cadata=bundle_pem.decode())
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx
    key = new_key()
    ident = SpiffeId.for_workload(ca.trust_domain, "default", sa)
    svid = Svid(ca.sign(make_csr(key, ident), ident, timedelta(hours=1)), key, ca.bundle)
    ctx = client_context(svid)
    ctx.verify_mode = ssl.CERT_NONE  # we only test what the *server* accepts
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def test_tls_without_a_client_certificate_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path) as p:
            assert p.cp.ca is not None
            ctx = _tls_client(None, bundle_pem=p.cp.ca.bundle_pem)
            assert await _raw(SERVER_IP, p.inbound_port, GET, ctx=ctx) == b""
            await asyncio.sleep(0.05)
            assert p.app.seen == [] and p.app.connections == 0
            assert p.metric(p.server, "identity_connections_refused_total",
                            reason="handshake") == 1

    run(main())


def test_a_certificate_from_another_trust_domain_fails_the_handshake(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path) as p:
            assert p.cp.ca is not None
            for other in (MeshCA.create_root("evil.example"), MeshCA.create_root("cluster.local")):
                ctx = _tls_client(other, bundle_pem=p.cp.ca.bundle_pem)
                assert await _raw(SERVER_IP, p.inbound_port, GET, ctx=ctx) == b""
            await asyncio.sleep(0.05)
            assert p.app.seen == []
            assert p.metric(p.server, "identity_connections_refused_total",
                            reason="handshake") == 2

    run(main())


def test_a_valid_mesh_certificate_from_a_non_proxy_client_gets_its_own_identity(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path) as p:
            assert p.cp.ca is not None
            ctx = _tls_client(p.cp.ca, bundle_pem=p.cp.ca.bundle_pem, sa="batch")
            answer = await _raw(SERVER_IP, p.inbound_port,
                                GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
                                ctx=ctx)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert p.app.seen[-1].headers["x-hm-peer-identity"] == \
                "spiffe://cluster.local/ns/default/sa/batch"

    run(main())


def test_secure_naming_refuses_a_server_with_the_wrong_identity(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path) as p:
            assert (await p.get("/pooled")).startswith(b"HTTP/1.1 200 ")  # one idle, verified
            # the client's snapshot says web-0 runs as "payments": web's SVID must not do,
            # and the pooled connection verified as "web" must not be reused either
            p.cp.set("default/client-0", _client_snapshot(p, web_sa="payments"))
            await _until(lambda: p.client.ctx.tables is not None and any(
                e.service_account == "payments" for e in p.client.ctx.tables.by_ip.values()))
            resp = await p.get("/n")
            assert resp.startswith(b"HTTP/1.1 502 "), resp
            assert b"hm-proxy-error: connect-peer-auth" in resp
            assert b"spiffe://cluster.local/ns/default/sa/payments" in resp
            assert [r.path for r in p.app.seen] == ["/pooled"]

    run(main())


def _client_snapshot(p: Pair, **kw: Any) -> dict[str, Any]:
    from hybridmesh.proxy.testing import pod_snapshot

    return pod_snapshot("client-0", "127.0.0.1", p.services(**kw), mtls_mode="STRICT",
                        service_account="client")


async def _until(cond: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def test_without_an_identity_meshed_traffic_fails_closed(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, wait=False, ca_up=False) as p:
            await _until(lambda: p.cp.sign_requests >= 2)
            resp = await p.get("/x")
            assert resp.startswith(b"HTTP/1.1 503 "), resp
            assert b"hm-proxy-error: no-identity" in resp
            assert b"CA refused (503)" in resp
            assert p.app.seen == [] and p.app.connections == 0
            assert p.metric(p.client, "identity_renewals_total", result="failure") >= 1
            assert p.metric(p.client, "identity_cert_expiry_timestamp_seconds") == 0
            assert p.client.config_dump()["identity"]["state"] == "pending"
            # and the server side cannot terminate mTLS: a TLS client is refused
            assert p.cp.ca is not None
            ctx = _tls_client(p.cp.ca, bundle_pem=p.cp.ca.bundle_pem)
            assert await _raw(SERVER_IP, p.inbound_port, GET, ctx=ctx) == b""
            assert p.metric(p.server, "identity_connections_refused_total",
                            reason="no-identity") == 1

    run(main())


def test_plaintext_endpoints_stay_plaintext(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path, mode="PERMISSIVE",
                             publish={"placement": "none"}) as p:
            assert (await p.get("/plain")).startswith(b"HTTP/1.1 200 ")
            assert p.client.ctx.pool.opened == 1
            assert p.client.ctx.mtls is not None and p.client.ctx.mtls.handshakes == 0
            assert p.metric(p.server, "identity_connections_total",
                            connection_security_policy="none") == 1

    run(main())


def test_http2_between_proxies_negotiates_h2_over_mtls(tmp_path: Path) -> None:
    async def main() -> None:
        # appProtocol http2: the client proxy carries the HTTP/1.1 request as an h2 stream
        # (hm-orig-proto), ALPN h2 on the mTLS hop; the server proxy gives the app HTTP/1.1
        async with mesh_pair(tmp_path, publish={"app_protocol": "http2"}) as p:
            for i in range(3):
                resp = await p.get(f"/h2-{i}")
                assert resp.startswith(b"HTTP/1.1 200 "), resp
            assert p.client.ctx.mtls is not None
            assert p.client.ctx.mtls.opened == (0, 1) and p.client.ctx.h2pool.opened == 0
            assert p.client.ctx.mtls.handshakes == 1
            assert "hm-orig-proto" not in p.app.seen[-1].headers
            assert p.metric(p.server, "request_total", source_principal=CLIENT_ID,
                            response_code="200") == 3

    run(main())


def test_opaque_tcp_is_relayed_over_mtls(tmp_path: Path) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    async def main() -> None:
        async with mesh_pair(tmp_path, publish={"app_protocol": "tcp"}) as p:
            server = await asyncio.start_server(echo, APP_IP, 0)
            port = server.sockets[0].getsockname()[1]
            p.server.ctx.original_dst = lambda _s, d: (APP_IP, port) if d == "inbound" else None
            reader, writer = await asyncio.open_connection("127.0.0.1", p.client.outbound_port)
            payload = bytes(range(256)) * 4096
            writer.write(payload)
            got = b""
            async with asyncio.timeout(5):
                while len(got) < len(payload):
                    got += await reader.read(65536)
            writer.close()
            server.close()
            assert got == payload
            assert p.metric(p.server, "identity_connections_total",
                            connection_security_policy="mutual_tls",
                            source_principal=CLIENT_ID) == 1

    run(main())


def test_key_material_is_in_no_dump_metric_or_log(tmp_path: Path, caplog: Any) -> None:
    """The keys were made by the keygen child (identity/keygen.py) and came back by pipe."""

    async def main() -> None:
        caplog.set_level("DEBUG")
        async with mesh_pair(tmp_path) as p:
            await p.get("/k")
            for w in (p.client, p.server):
                assert w.ctx.mtls is not None
                m = w.ctx.mtls.identity.material
                assert m is not None
                pem = m.svid.private_key_pem().decode()
                assert pem.startswith("-----BEGIN PRIVATE KEY-----")
                body = "".join(pem.strip().splitlines()[1:-1])
                texts = [json.dumps(w.config_dump(), default=str), w.exposition().decode(),
                         caplog.text, repr(m), repr(w.ctx.mtls.identity.describe())]
                for text in texts:
                    assert body[:40] not in text.replace("\n", "")
                    assert "PRIVATE KEY" not in text
                assert w.config_dump()["identity"]["svid"]["identity"] in (CLIENT_ID, SERVER_ID)

    run(main())



def test_which_hops_are_mtls(tmp_path: Path) -> None:
    async def main() -> None:
        async with mesh_pair(tmp_path) as p:
            mesh = p.client.ctx.mtls
            assert mesh is not None
            assert mesh.meshed_peer((SERVER_IP, 1234)) is not None  # a sidecar pod's IP
            assert mesh.meshed_peer((SERVER_IP, 15020)) is None  # the peer proxy's admin port
            assert mesh.meshed_peer(("127.0.0.1", 8080)) is None  # our own pod: the app
            assert mesh.meshed_peer(("192.0.2.1", 80)) is None  # outside the mesh

    run(main())
