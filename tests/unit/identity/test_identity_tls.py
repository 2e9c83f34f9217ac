"""Real TLS 1.3 handshakes (OpenSSL) between mesh contexts, and the post-handshake check."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.tls import (
    MeshSSLContext,
    MtlsContexts,
    PeerIdentityError,
    check_peer,
    client_context,
    server_context,
)
from hybridmesh.identity.workload import Expected, private_key_pem

if TYPE_CHECKING:
    from conftest import Pki

pytestmark = pytest.mark.timeout(30)

SERVER = SpiffeId.parse("spiffe://example.org/ns/shop/sa/api")
CLIENT = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")


@dataclass
class Outcome:
    server_peer: SpiffeId | None = None
    client_peer: SpiffeId | None = None
    server_error: BaseException | None = None
    client_error: BaseException | None = None
    alpn: str | None = None
    version: str | None = None
    has_ticket: bool | None = None


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, *,
              server_expects: Expected = None, client_expects: Expected = SERVER) -> Outcome:
    """One handshake over a socketpair; the server runs in a thread. Both sides exchange
    a byte afterwards so that a client rejected by the server (TLS 1.3 reports that
    after the client's handshake returns) sees the alert."""
    out = Outcome()
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    theirs.settimeout(5)

    def serve() -> None:
        try:
            with server.wrap_socket(theirs, server_side=True) as tls:
                out.server_peer = check_peer(tls, server_expects)
                tls.sendall(b"!")
        except (OSError, PeerIdentityError) as exc:
            out.server_error = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(ours) as tls:
            out.version, out.alpn = tls.version(), tls.selected_alpn_protocol()
            if isinstance(client, MeshSSLContext):
                out.client_peer = check_peer(tls, client_expects)
            if tls.recv(1) != b"!":
                raise ConnectionError("server closed without data")
            out.has_ticket = tls.session is not None and tls.session.has_ticket
    except (OSError, PeerIdentityError) as exc:
        out.client_error = exc
    finally:
        thread.join(10)
        ours.close()
    return out


@pytest.fixture(scope="module")
def contexts(pki: Pki) -> tuple[MeshSSLContext, MeshSSLContext]:
    return (server_context(pki.svid("shop", "api")), client_context(pki.svid("shop", "web")))


def test_mutual_handshake_verifies_both_identities(
        contexts: tuple[MeshSSLContext, MeshSSLContext]) -> None:
    out = handshake(*contexts)
    assert out.server_error is None and out.client_error is None
    assert out.server_peer == CLIENT
    assert out.client_peer == SERVER
    assert out.version == "TLSv1.3"
    assert out.alpn == "h2"
    assert out.has_ticket is False  # no resumption: every connection shows its certificate


def test_alpn_falls_back_to_http1(pki: Pki,
                                  contexts: tuple[MeshSSLContext, MeshSSLContext]) -> None:
    client = client_context(pki.svid("shop", "web"))
    client.set_alpn_protocols(["http/1.1"])
    assert handshake(contexts[0], client).alpn == "http/1.1"


def test_client_checks_the_server_identity(
        contexts: tuple[MeshSSLContext, MeshSSLContext]) -> None:
    out = handshake(*contexts, client_expects=SpiffeId.parse("spiffe://example.org/ns/x/sa/db"))
    assert isinstance(out.client_error, PeerIdentityError)
    assert "peer is spiffe://example.org/ns/shop/sa/api" in str(out.client_error)


def test_server_can_restrict_clients(contexts: tuple[MeshSSLContext, MeshSSLContext]) -> None:
    out = handshake(*contexts, server_expects={SERVER})
    assert isinstance(out.server_error, PeerIdentityError)
    assert out.server_peer is None


def _plain_client(pki: Pki, cert_and_key: bytes | None, tmp_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=pki.ca.bundle.pem_text)
    if cert_and_key is not None:
        path = tmp_path / "hm-client.pem"
        path.write_bytes(cert_and_key)
        ctx.load_cert_chain(path)
    return ctx


def test_client_without_certificate_is_refused(
        pki: Pki, contexts: tuple[MeshSSLContext, MeshSSLContext], tmp_path: Path) -> None:
    out = handshake(contexts[0], _plain_client(pki, None, tmp_path))
    assert isinstance(out.server_error, ssl.SSLError)
    assert "certificate" in str(out.server_error).lower()
    assert out.client_error is not None
    assert out.server_peer is None


def _svid_pem(svid_pki: Pki, namespace: str, sa: str) -> bytes:
    svid = svid_pki.svid(namespace, sa)
    return svid.chain_pem + private_key_pem(svid.private_key)


@pytest.mark.parametrize("issuer", ["other_pki", "foreign_pki"])
def test_client_from_another_ca_fails_the_handshake(
        pki: Pki, contexts: tuple[MeshSSLContext, MeshSSLContext], tmp_path: Path,
        issuer: str, request: pytest.FixtureRequest) -> None:
    # The client trusts our bundle, but its own certificate comes from another CA
    # (same trust domain name, or another trust domain): OpenSSL must refuse it.
    client = _plain_client(pki, _svid_pem(request.getfixturevalue(issuer), "shop", "web"),
                           tmp_path)
    out = handshake(contexts[0], client)
    assert isinstance(out.server_error, ssl.SSLCertVerificationError)
    assert out.client_error is not None
    assert out.server_peer is None


def test_server_from_another_ca_fails_the_handshake(
        other_pki: Pki, contexts: tuple[MeshSSLContext, MeshSSLContext]) -> None:
    out = handshake(server_context(other_pki.svid("shop", "api")), contexts[1])
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)
    assert out.client_peer is None


def test_chain_valid_but_wrong_trust_domain_is_caught_by_check_peer(
        pki: Pki, contexts: tuple[MeshSSLContext, MeshSSLContext], tmp_path: Path) -> None:
    # Signed by OUR root, so OpenSSL accepts it: only the SPIFFE check can refuse it.
    cert, key = pki.forge(uris=["spiffe://other.example/ns/shop/sa/web"])
    pem = cert.public_bytes(serialization.Encoding.PEM) + private_key_pem(key)
    out = handshake(contexts[0], _plain_client(pki, pem, tmp_path))
    assert isinstance(out.server_error, PeerIdentityError)
    assert "not in trust domain 'example.org'" in str(out.server_error)


def test_tls12_only_client_is_refused(
        pki: Pki, contexts: tuple[MeshSSLContext, MeshSSLContext], tmp_path: Path) -> None:
    client = _plain_client(pki, _svid_pem(pki, "shop", "web"), tmp_path)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    out = handshake(contexts[0], client)
    assert isinstance(out.server_error, ssl.SSLError)
    assert out.client_error is not None


def test_check_peer_refuses_foreign_contexts_and_unfinished_handshakes(
        contexts: tuple[MeshSSLContext, MeshSSLContext]) -> None:
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(PeerIdentityError, match="not made with a mesh TLS context"):
        check_peer(plain.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO()), None)
    unfinished = contexts[1].wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    with pytest.raises(PeerIdentityError, match="handshake not complete"):
        check_peer(unfinished, None)


def test_context_settings(contexts: tuple[MeshSSLContext, MeshSSLContext]) -> None:
    server, client = contexts
    for ctx in contexts:
        assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert not ctx.check_hostname
        assert ctx.verify_flags & ssl.VERIFY_X509_STRICT
    assert server.num_tickets == 0
    assert server.local_identity == SERVER and client.local_identity == CLIENT


def test_rotation_serves_new_connections_and_keeps_old_ones(pki: Pki) -> None:
    server = MtlsContexts(pki.svid("shop", "api"))
    client = client_context(pki.svid("shop", "web"))
    old_serial = server.svid.serial
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]
    accepted: list[ssl.SSLSocket] = []

    def accept(ctx: ssl.SSLContext) -> None:
        conn, _ = listener.accept()
        accepted.append(ctx.wrap_socket(conn, server_side=True))

    def connect() -> ssl.SSLSocket:
        thread = threading.Thread(target=accept, args=(server.server,))
        thread.start()
        tls = client.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
        thread.join(5)
        return tls

    try:
        first = connect()
        server.rotate(pki.svid("shop", "api", ttl=timedelta(hours=2)))
        second = connect()
        assert check_peer(first, SERVER) == check_peer(second, SERVER) == SERVER
        serials = [_peer_serial(first), _peer_serial(second)]
        assert serials == [old_serial, server.svid.serial]
        assert serials[0] != serials[1]
        for server_side, tls in zip(accepted, (first, second), strict=True):
            server_side.sendall(b"ping")  # the pre-rotation connection still works
            assert tls.recv(4) == b"ping"
    finally:
        for sock in [*accepted, listener]:
            sock.close()


def _peer_serial(tls: ssl.SSLSocket) -> int:
    from cryptography import x509

    der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_asyncio_loopback_handshake(contexts: tuple[MeshSSLContext, MeshSSLContext]) -> None:
    async def main() -> tuple[SpiffeId, SpiffeId]:
        seen: asyncio.Future[SpiffeId] = asyncio.get_running_loop().create_future()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.set_result(check_peer(writer.get_extra_info("ssl_object"), None))
            writer.write(b"ok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=contexts[0])
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=contexts[1])
            client_seen = check_peer(writer.get_extra_info("ssl_object"), SERVER)
            assert await reader.read(2) == b"ok"
            writer.close()
            return client_seen, await asyncio.wait_for(seen, 5)

    assert asyncio.run(main()) == (SERVER, CLIENT)


def test_intermediate_ca_chains_verify_end_to_end(user_root: tuple[bytes, bytes]) -> None:
    from hybridmesh.identity.ca import MeshCA
    from hybridmesh.identity.workload import Svid, make_csr, new_key

    ca = MeshCA.create_intermediate("example.org", *user_root)

    def svid(identity: SpiffeId) -> Svid:
        key = new_key()
        return Svid(ca.sign(make_csr(key, identity), identity, timedelta(hours=1)), key,
                    ca.bundle)

    out = handshake(server_context(svid(SERVER)), client_context(svid(CLIENT)))
    assert (out.server_peer, out.client_peer) == (CLIENT, SERVER)
