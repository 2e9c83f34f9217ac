"""Who the peer of an inbound connection *provably* is, and the headers that say so upstream.

Only an mTLS handshake verified by this proxy proves a peer's SPIFFE ID. Anything a client
writes in a header is a claim, so on the inbound side the proxy removes every client-sent
``x-forwarded-client-cert`` and ``x-hm-peer-identity`` and, for an mTLS connection, sets them
from the verified certificate (Envoy's ``SANITIZE_SET``): the app can trust them because
nothing else can put them there. A plaintext (PERMISSIVE) connection gets neither.

Kept free of engine imports: ``exchange.py`` and ``inbound.py`` both use it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Final

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.proxy.protocols.http1 import Request
from hybridmesh.telemetry.proxy_metrics import UNKNOWN, Peer

__all__ = [
    "IDENTITY_HEADERS",
    "PEER_IDENTITY_HEADER",
    "XFCC_HEADER",
    "HeaderFields",
    "VerifiedPeer",
    "rewrite_identity_headers",
    "with_principal",
]

XFCC_HEADER: Final = b"x-forwarded-client-cert"
PEER_IDENTITY_HEADER: Final = b"x-hm-peer-identity"
IDENTITY_HEADERS: Final = frozenset((XFCC_HEADER, PEER_IDENTITY_HEADER))

HeaderFields = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class VerifiedPeer:
    """The outcome of a verified mTLS handshake on the inbound side."""

    peer: SpiffeId  # the client proxy's identity
    local: SpiffeId  # ours, as presented in that handshake
    cert_sha256: str  # hex digest of the client's leaf (DER), Envoy's XFCC ``Hash``

    @classmethod
    def from_der(cls, peer: SpiffeId, local: SpiffeId, leaf_der: bytes) -> VerifiedPeer:
        return cls(peer, local, hashlib.sha256(leaf_der).hexdigest())

    def header_fields(self) -> HeaderFields:
        """The identity headers the app receives for this connection."""
        xfcc = f"By={self.local};Hash={self.cert_sha256};URI={self.peer}"
        return ((XFCC_HEADER, xfcc.encode("ascii")),
                (PEER_IDENTITY_HEADER, str(self.peer).encode("ascii")))


def rewrite_identity_headers(request: Request, fields: HeaderFields) -> Request:
    """``request`` without client-sent identity headers, plus ``fields`` (may be empty)."""
    headers = request.headers
    if not fields and not any(name in IDENTITY_HEADERS for name, _ in headers):
        return request
    kept = tuple(f for f in headers if f[0] not in IDENTITY_HEADERS)
    return replace(request, headers=kept + fields)


_PEERS: dict[tuple[str, str, str], Peer] = {}


def with_principal(peer: Peer, principal: SpiffeId) -> Peer:
    """``peer`` with a verified principal (namespace from the ID when the IP was unknown).

    Peers are metric-cache keys: the same value is returned as the same object.
    """
    namespace = peer.namespace
    if namespace == UNKNOWN and principal.namespace is not None:
        namespace = principal.namespace
    key = (peer.workload, namespace, str(principal))
    cached = _PEERS.get(key)
    if cached is None:
        if len(_PEERS) > 10_000:  # bounded: principals come from our own CA, but be safe
            _PEERS.clear()
        cached = _PEERS[key] = Peer(*key)
    return cached
