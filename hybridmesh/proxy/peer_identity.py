"""Who the peer of an inbound connection *provably* is, and the headers that say so upstream.

Only an mTLS handshake verified by this proxy proves a peer's SPIFFE ID. Anything a client
writes in a header is a claim, so on the inbound side the proxy removes every client-sent
``x-forwarded-client-cert`` and ``x-hm-peer-identity`` and, for an mTLS connection, sets them
from the verified certificate (Envoy's ``SANITIZE_SET``): the app can trust them because
nothing else can put them there. A plaintext (PERMISSIVE) connection gets neither.

Per request this is one scan of the client's field names and one tuple concatenation: the
identity fields are built and validated once per connection (:meth:`VerifiedPeer.header_fields`)
and come back as :class:`~hybridmesh.proxy.protocols._h1events.ParsedHeaders`, the type the
HTTP/1 writer trusts without re-checking. That is sound only because every field is either
straight from a reader (a subset of a reader's ``ParsedHeaders`` stays valid) or one of ours,
checked here with the writer's own rules (lowercase token names, no control characters in
values); a plain-tuple input (HTTP/2) stays a plain tuple and is checked by the writer.

Kept free of engine imports: ``exchange.py`` and ``inbound.py`` both use it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.proxy.protocols._h1events import ParsedHeaders
from hybridmesh.proxy.protocols._h1grammar import BAD_VALUE_CHAR
from hybridmesh.proxy.protocols.http1 import Request
from hybridmesh.telemetry.proxy_metrics import UNKNOWN, Peer

__all__ = [
    "IDENTITY_HEADERS",
    "PEER_IDENTITY_HEADER",
    "XFCC_HEADER",
    "HeaderFields",
    "VerifiedPeer",
    "rewrite_identity_headers",
    "vouched",
    "with_principal",
]

XFCC_HEADER: Final = b"x-forwarded-client-cert"
PEER_IDENTITY_HEADER: Final = b"x-hm-peer-identity"
IDENTITY_HEADERS: Final = frozenset((XFCC_HEADER, PEER_IDENTITY_HEADER))

HeaderFields = tuple[tuple[bytes, bytes], ...]
_LOWER_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
"""What the HTTP/1 writer demands of a field name it did not get from a reader."""


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
        """The identity headers the app receives for this connection (once per connection:
        validated here so that requests carrying them skip the writer's check)."""
        xfcc = f"By={self.local};Hash={self.cert_sha256};URI={self.peer}"
        return vouched(((XFCC_HEADER, xfcc.encode("ascii")),
                        (PEER_IDENTITY_HEADER, str(self.peer).encode("ascii"))))


def vouched(fields: HeaderFields) -> HeaderFields:
    """``fields`` as a ``ParsedHeaders`` after checking them as the HTTP/1 writer would;
    ValueError if a name is not a lowercase token or a value holds a control character."""
    for name, value in fields:
        if _LOWER_TOKEN.fullmatch(name) is None or BAD_VALUE_CHAR.search(value) is not None:
            raise ValueError(f"identity header {name!r}: not writable as HTTP/1 field")
    return ParsedHeaders(fields)


def rewrite_identity_headers(request: Request, fields: HeaderFields) -> Request:
    """``request`` without client-sent identity headers, plus ``fields`` (may be empty).

    The result keeps the reader's ``ParsedHeaders`` type when both inputs have it (see the
    module docstring); anything else yields a plain tuple, which the writer validates.
    """
    headers = request.headers
    for name, _ in headers:
        if name in IDENTITY_HEADERS:
            kept: HeaderFields = tuple(f for f in headers if f[0] not in IDENTITY_HEADERS)
            break
    else:
        if not fields:
            return request
        kept = headers
    joined = kept + fields
    if type(headers) is ParsedHeaders and (not fields or type(fields) is ParsedHeaders):
        joined = ParsedHeaders(joined)
    # positional, not dataclasses.replace (~4x dearer): test_peer_identity pins the fields
    return Request(request.method, request.target, joined, request.http_version,
                   request.keep_alive, request.content_length)


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
