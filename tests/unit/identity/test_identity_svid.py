"""`PemSvid`/`TrustRoots`: the proxy's cryptography-free SVID checks what `workload.Svid`
checks, describes itself identically, hides its key, and builds working mTLS contexts."""

from __future__ import annotations

import contextlib
import pickle
import ssl
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization

from hybridmesh.identity import _x509
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.svid import InvalidPemSvid, PemSvid, TrustRoots
from hybridmesh.identity.tls import check_peer, client_context, server_context
from hybridmesh.identity.workload import Svid, private_key_pem

if TYPE_CHECKING:
    from conftest import Pki


def _pem_svid(svid: Svid, pki: Pki) -> PemSvid:
    roots = TrustRoots(pki.trust_domain, pki.ca.bundle_pem)
    return PemSvid(svid.chain_pem, svid.private_key_pem(), roots,
                   public_key=_x509.spki_der(svid.private_key.public_key()))


def test_describes_itself_exactly_like_the_cryptography_svid(pki: Pki) -> None:
    svid = pki.svid("shop", "web")
    pem = _pem_svid(svid, pki)
    assert pem.describe() == svid.describe()
    assert (pem.identity, pem.serial, pem.not_after, pem.lifetime) == (
        svid.identity, svid.serial, svid.not_after, svid.lifetime)
    assert pem.identity == SpiffeId.for_workload(pki.trust_domain, "shop", "web")


def test_never_shows_or_pickles_its_key(pki: Pki) -> None:
    svid = pki.svid()
    pem = _pem_svid(svid, pki)
    body = "".join(svid.private_key_pem().decode().splitlines()[1:-1])
    for text in (repr(pem), str(pem), repr(pem.describe()), repr(pem.bundle)):
        assert "PRIVATE KEY" not in text and body[:32] not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(pem)


def test_refuses_a_chain_for_another_key(pki: Pki) -> None:
    svid, other = pki.svid(), pki.svid()
    roots = TrustRoots(pki.trust_domain, pki.ca.bundle_pem)
    with pytest.raises(InvalidPemSvid, match="does not match"):
        PemSvid(svid.chain_pem, other.private_key_pem(), roots,
                public_key=_x509.spki_der(other.private_key.public_key()))


@pytest.mark.parametrize(("forge", "reason"), [
    ({"uris": ["spiffe://example.org/a", "spiffe://example.org/b"]}, "2 URI SANs"),
    ({"uris": ["spiffe://example.org/a"], "ca": True}, "CA certificate"),
    ({"uris": ["spiffe://other.example/a"]}, "not in trust domain"),
    ({"uris": ["spiffe://example.org"]}, "names a trust domain"),
    ({"uris": ["spiffe://example.org/a"], "key_cert_sign": True}, "keyUsage"),
])
def test_refuses_what_is_not_an_svid(pki: Pki, forge: dict[str, object], reason: str) -> None:
    cert, key = pki.forge(**forge)  # type: ignore[arg-type]
    chain = cert.public_bytes(serialization.Encoding.PEM)
    roots = TrustRoots(pki.trust_domain, pki.ca.bundle_pem)
    with pytest.raises(InvalidPemSvid, match=reason):
        PemSvid(chain, private_key_pem(key), roots, public_key=_x509.spki_der(key.public_key()))


def test_trust_roots_accept_only_ca_certificates(pki: Pki) -> None:
    assert TrustRoots(pki.trust_domain, pki.ca.bundle_pem).count == 1
    leaf = pki.svid().chain_pem
    with pytest.raises(InvalidPemSvid, match="not a CA"):
        TrustRoots(pki.trust_domain, leaf)
    for garbage in (b"", b"hello", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"):
        with pytest.raises(InvalidPemSvid):
            TrustRoots(pki.trust_domain, garbage)


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> tuple[ssl.SSLObject,
                                                                         ssl.SSLObject]:
    bios = [ssl.MemoryBIO() for _ in range(4)]
    c = client.wrap_bio(bios[0], bios[1], server_side=False, server_hostname=None)
    s = server.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(10):
        for obj, out, into in ((c, bios[1], bios[2]), (s, bios[3], bios[0])):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
            into.write(out.read())
    return c, s


def test_pem_and_cryptography_svids_interoperate_over_mtls(pki: Pki) -> None:
    """A proxy holding a PemSvid talks to a peer holding a workload.Svid, both ways, and
    check_peer names each side exactly."""
    server_svid, client_svid = pki.svid("shop", "web"), pki.svid("shop", "client")
    client = client_context(_pem_svid(client_svid, pki))
    c, s = _handshake(client, server_context(server_svid))
    assert check_peer(c, server_svid.identity) == server_svid.identity
    assert check_peer(s, None) == client_svid.identity
