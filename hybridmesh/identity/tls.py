"""TLS contexts for proxy-to-proxy mTLS, and the post-handshake identity check.

OpenSSL does the handshake and verifies the chain against the trust bundle (signatures,
validity, X.509 strict mode); hostname checking is off because mesh identities are SPIFFE
URIs, not DNS names. That makes the explicit `check_peer` call after every handshake
mandatory: it applies the X509-SVID leaf rules to the peer's leaf (`_leaf`: not a CA, the
right keyUsage, exactly one URI SAN, a canonical SPIFFE ID of the bundle's trust domain, valid
now) and compares the SPIFFE ID exactly (this is Istio's and Linkerd's "secure naming", done
by the caller instead of a verify callback, which Python's `ssl` does not offer).

Nothing here imports `cryptography` (the leaf is read by `_der`): this module runs in every
long-lived proxy worker, where that library would cost ~10 MB of RSS. Contexts accept any SVID
with the `SvidLike` shape: `workload.Svid` (CA side, tests) or `svid.PemSvid` (the proxy).

Choices and why:
- TLS 1.3 only: one round trip, no renegotiation, no legacy cipher suites to audit.
- Client certificates required on the server side: the mesh is mutual or nothing.
- No session tickets (server ``num_tickets = 0``): every connection authenticates with
  certificates, so a rotated or revoked SVID cannot ride on a cached session, and the
  server saves sending tickets nobody resumes.
- Contexts are immutable once built. On rotation build new ones (`MtlsContexts.rotate`);
  connections already open keep the context they were made with.
- The key reaches OpenSSL through a memfd (anonymous memory), never through a file.
"""

from __future__ import annotations

import os
import ssl
from datetime import UTC, datetime
from typing import Final, Protocol

from hybridmesh.identity._der import DerError, parse_certificate
from hybridmesh.identity._leaf import (
    Expected,
    PeerIdentityError,
    check_expected,
    check_validity,
    leaf_identity,
)
from hybridmesh.identity.spiffe import SpiffeId

__all__ = [
    "ALPN_PROTOCOLS",
    "MeshSSLContext",
    "MtlsContexts",
    "PeerIdentityError",
    "Roots",
    "SvidLike",
    "check_peer",
    "client_context",
    "server_context",
]

ALPN_PROTOCOLS: Final = ("h2", "http/1.1")


class Roots(Protocol):
    """A trust bundle as contexts use it (`bundle.TrustBundle`, `svid.TrustRoots`)."""

    @property
    def trust_domain(self) -> str: ...

    @property
    def pem_text(self) -> str: ...


class SvidLike(Protocol):
    """What a context is built from (`workload.Svid`, `svid.PemSvid`)."""

    @property
    def identity(self) -> SpiffeId: ...

    @property
    def chain_pem(self) -> bytes: ...

    @property
    def bundle(self) -> Roots: ...

    def private_key_pem(self) -> bytes: ...


class MeshSSLContext(ssl.SSLContext):
    """An `ssl.SSLContext` that remembers the bundle and identity it was built from, so
    `check_peer` validates against exactly what the handshake trusted."""

    trust_bundle: Roots
    local_identity: SpiffeId


def server_context(svid: SvidLike) -> MeshSSLContext:
    """Context for accepting mesh connections: requires and verifies a client SVID."""
    ctx = _mesh_context(ssl.PROTOCOL_TLS_SERVER, svid)
    ctx.num_tickets = 0
    return ctx


def client_context(svid: SvidLike) -> MeshSSLContext:
    """Context for dialing mesh peers: presents `svid`, verifies the server's chain."""
    return _mesh_context(ssl.PROTOCOL_TLS_CLIENT, svid)


def check_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket, expected: Expected, *,
               now: datetime | None = None) -> SpiffeId:
    """After the handshake: the peer's SPIFFE ID, or `PeerIdentityError`.

    `expected` is the identity (or set of identities) the caller accepts; None accepts
    any identity in the trust domain (the server side, before authorization). The chain
    was verified by OpenSSL against ``ctx.trust_bundle`` during the handshake
    (``CERT_REQUIRED``): only the leaf rules and the name are checked here.
    """
    ctx = ssl_object.context
    if not isinstance(ctx, MeshSSLContext):
        raise PeerIdentityError("connection was not made with a mesh TLS context")
    if ssl_object.version() != "TLSv1.3":
        raise PeerIdentityError(f"handshake not complete or not TLS 1.3 ({ssl_object.version()})")
    leaf_der = ssl_object.getpeercert(binary_form=True)
    if not leaf_der:
        raise PeerIdentityError("peer presented no certificate")
    try:
        leaf = parse_certificate(leaf_der)
    except DerError as exc:
        raise PeerIdentityError(f"peer certificate is malformed: {exc}") from None
    identity = leaf_identity(leaf, ctx.trust_bundle.trust_domain)
    check_validity(leaf, identity, now or datetime.now(UTC))
    check_expected(identity, expected)
    return identity


class MtlsContexts:
    """The proxy's current server and client contexts; swap both on SVID rotation.

    Readers take `server`/`client` per new connection. `rotate` builds the new pair
    first and swaps it in with one assignment, so a reader never sees a half-rotated pair.
    """

    def __init__(self, svid: SvidLike) -> None:
        self._current = self._build(svid)

    @staticmethod
    def _build(svid: SvidLike) -> tuple[SvidLike, MeshSSLContext, MeshSSLContext]:
        return svid, server_context(svid), client_context(svid)

    def rotate(self, svid: SvidLike) -> None:
        self._current = self._build(svid)

    @property
    def svid(self) -> SvidLike:
        return self._current[0]

    @property
    def server(self) -> MeshSSLContext:
        return self._current[1]

    @property
    def client(self) -> MeshSSLContext:
        return self._current[2]


def _mesh_context(protocol: ssl._SSLMethod, svid: SvidLike) -> MeshSSLContext:
    ctx = MeshSSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identities are URIs; check_peer does the naming check
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cadata=svid.bundle.pem_text)
    _load_svid(ctx, svid)
    ctx.set_alpn_protocols(list(ALPN_PROTOCOLS))
    ctx.trust_bundle = svid.bundle
    ctx.local_identity = svid.identity
    return ctx


def _load_svid(ctx: ssl.SSLContext, svid: SvidLike) -> None:
    """Hand chain + key to OpenSSL via an anonymous memory file (`ssl` only reads paths)."""
    fd = os.memfd_create("hm-svid", os.MFD_CLOEXEC)
    try:
        data = memoryview(svid.chain_pem + svid.private_key_pem())
        while data:
            data = data[os.write(fd, data):]
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
