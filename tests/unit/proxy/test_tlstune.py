"""OpenSSL tuning of mesh contexts (_tlstune): buffers kept between records, AES-128-GCM first,
and nothing else changed: TLS 1.3 only, client certificates still required and verified."""

from __future__ import annotations

import ssl
from datetime import timedelta
from typing import cast

import pytest

from hybridmesh.identity.ca import MeshCA
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.svid import PemSvid
from hybridmesh.identity.tls import client_context, server_context
from hybridmesh.identity.workload import Svid, make_csr, new_key
from hybridmesh.proxy._tlstune import SSL_MODE_RELEASE_BUFFERS, Tuning, mode, tune
from hybridmesh.proxy.identity import TlsMaterial


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.create_root("cluster.local")


def svid(ca: MeshCA, sa: str) -> Svid:
    key = new_key()
    ident = SpiffeId.for_workload("cluster.local", "default", sa)
    return Svid(ca.sign(make_csr(key, ident), ident, timedelta(hours=1)), key, ca.bundle)


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> ssl.SSLObject:
    """A TLS handshake over memory BIOs (no sockets); raises ssl.SSLError on failure."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_side=False)  # (mesh: no hostname check)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done: set[str] = set()
    for _ in range(10):
        for name, obj, out, peer_in in (("c", c, c_out, s_in), ("s", s, s_out, c_in)):
            if name not in done:
                try:
                    obj.do_handshake()
                    done.add(name)
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if done == {"c", "s"}:
            return c
    raise AssertionError("handshake did not finish")


def test_tune_keeps_buffers_and_puts_aes128_first(ca: MeshCA) -> None:
    server, client = server_context(svid(ca, "web")), client_context(svid(ca, "client"))
    assert (mode(server) or 0) & SSL_MODE_RELEASE_BUFFERS  # CPython's default
    for ctx in (server, client):
        assert tune(ctx) is None
        assert mode(ctx) is not None
        assert not mode(ctx) & SSL_MODE_RELEASE_BUFFERS  # type: ignore[operator]
    conn = handshake(client, server)
    assert conn.version() == "TLSv1.3"
    assert conn.cipher()[0] == "TLS_AES_128_GCM_SHA256"  # type: ignore[index]


def test_a_tuned_side_still_talks_to_an_untuned_one(ca: MeshCA) -> None:
    server, client = server_context(svid(ca, "web")), client_context(svid(ca, "client"))
    assert tune(client) is None
    conn = handshake(client, server)
    assert conn.version() == "TLSv1.3"


def test_tuned_server_still_requires_a_trusted_client_certificate(ca: MeshCA) -> None:
    server = server_context(svid(ca, "web"))
    assert tune(server) is None
    stranger = client_context(svid(MeshCA.create_root("cluster.local"), "client"))
    stranger.load_verify_locations(cadata=ca.bundle_pem.decode())
    with pytest.raises(ssl.SSLError):
        conn = handshake(stranger, server)
        conn.write(b"x")  # TLS 1.3: the client learns of the rejection on its next record
        conn.read()


def test_refused_suites_leave_the_context_as_it_was(ca: MeshCA) -> None:
    ctx = server_context(svid(ca, "web"))
    why = tune(ctx, Tuning(suites="TLS_NOT_A_SUITE"))
    assert why is not None and "refused" in why
    assert (mode(ctx) or 0) & SSL_MODE_RELEASE_BUFFERS


def test_the_proxy_keeps_the_memory_lean_defaults(ca: MeshCA) -> None:
    """Kept buffers cost ~34 KiB per connection: the proxy's contexts release them (see the
    _tlstune docstring for the measured trade-off)."""
    material = TlsMaterial.build(cast(PemSvid, svid(ca, "web")), 1)  # same duck type
    for ctx in (material.server, material.client_h1, material.client_h2, material.client_opaque):
        assert (mode(ctx) or 0) & SSL_MODE_RELEASE_BUFFERS
        assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode is ssl.CERT_REQUIRED
