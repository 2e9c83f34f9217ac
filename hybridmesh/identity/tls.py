"""TLS contexts for proxy-to-proxy mTLS, and the post-handshake identity check.

OpenSSL does the handshake and verifies the chain against the trust bundle; hostname
checking is off because mesh identities are SPIFFE URIs, not DNS names. That makes the
explicit `check_peer` call after every handshake mandatory: it re-validates the peer's
chain with `validate_peer_certificate` and compares the SPIFFE ID exactly (this is
Istio's and Linkerd's "secure naming", done by the caller instead of a verify callback,
which Python's `ssl` does not offer).

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
from datetime import datetime
from typing import Final

from hybridmesh.identity.bundle import TrustBundle
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.workload import (
    Expected,
    PeerIdentityError,
    Svid,
    private_key_pem,
    validate_peer_certificate,
)

__all__ = [
    "ALPN_PROTOCOLS",
    "MeshSSLContext",
    "MtlsContexts",
    "PeerIdentityError",
    "check_peer",
    "client_context",
    "server_context",
]

ALPN_PROTOCOLS: Final = ("h2", "http/1.1")


class MeshSSLContext(ssl.SSLContext):
    """An `ssl.SSLContext` that remembers the bundle and identity it was built from, so
    `check_peer` validates against exactly what the handshake trusted."""

    trust_bundle: TrustBundle
    local_identity: SpiffeId


def server_context(svid: Svid) -> MeshSSLContext:
    """Context for accepting mesh connections: requires and verifies a client SVID."""
    ctx = _mesh_context(ssl.PROTOCOL_TLS_SERVER, svid)
    ctx.num_tickets = 0
    return ctx


def client_context(svid: Svid) -> MeshSSLContext:
    """Context for dialing mesh peers: presents `svid`, verifies the server's chain."""
    return _mesh_context(ssl.PROTOCOL_TLS_CLIENT, svid)


def check_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket, expected: Expected, *,
               now: datetime | None = None) -> SpiffeId:
    """After the handshake: the peer's SPIFFE ID, or `PeerIdentityError`.

    `expected` is the identity (or set of identities) the caller accepts; None accepts
    any identity in the trust domain (the server side, before authorization).
    """
    ctx = ssl_object.context
    if not isinstance(ctx, MeshSSLContext):
        raise PeerIdentityError("connection was not made with a mesh TLS context")
    if ssl_object.version() != "TLSv1.3":
        raise PeerIdentityError(f"handshake not complete or not TLS 1.3 ({ssl_object.version()})")
    chain = _peer_chain(ssl_object)
    return validate_peer_certificate(chain, ctx.trust_bundle, expected, now=now)


class MtlsContexts:
    """The proxy's current server and client contexts; swap both on SVID rotation.

    Readers take `server`/`client` per new connection. `rotate` builds the new pair
    first and swaps it in with one assignment, so a reader never sees a half-rotated pair.
    """

    def __init__(self, svid: Svid) -> None:
        self._current = self._build(svid)

    @staticmethod
    def _build(svid: Svid) -> tuple[Svid, MeshSSLContext, MeshSSLContext]:
        return svid, server_context(svid), client_context(svid)

    def rotate(self, svid: Svid) -> None:
        self._current = self._build(svid)

    @property
    def svid(self) -> Svid:
        return self._current[0]

    @property
    def server(self) -> MeshSSLContext:
        return self._current[1]

    @property
    def client(self) -> MeshSSLContext:
        return self._current[2]


def _mesh_context(protocol: ssl._SSLMethod, svid: Svid) -> MeshSSLContext:
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


def _load_svid(ctx: ssl.SSLContext, svid: Svid) -> None:
    """Hand chain + key to OpenSSL via an anonymous memory file (`ssl` only reads paths)."""
    fd = os.memfd_create("hm-svid", os.MFD_CLOEXEC)
    try:
        data = memoryview(svid.chain_pem + private_key_pem(svid.private_key))
        while data:
            data = data[os.write(fd, data):]
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """The chain the peer sent, leaf first, as DER.

    Python 3.13 has `get_unverified_chain()`; 3.10–3.12 have it on the private `_sslobj`.
    Failing both, the leaf alone (enough when the CA is the root itself).
    """
    public = getattr(ssl_object, "get_unverified_chain", None)
    if public is not None:
        return [bytes(der) for der in public()]
    private = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if private is not None:
        import _ssl

        return [cert.public_bytes(_ssl.ENCODING_DER) for cert in private() or []]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []
