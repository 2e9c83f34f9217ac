"""The X509-SVID leaf rules, on DER-read facts (private; no `cryptography` needed).

One implementation serves both paths: the proxy's post-handshake check (`tls.check_peer`,
where OpenSSL already verified the chain) and the full validator (`_peer`, which also verifies
the chain with `cryptography`). A leaf proves an identity only if it is not a CA, has
keyUsage digitalSignature without certSign/cRLSign, and carries exactly one URI SAN that is a
canonical SPIFFE ID with a path, in the expected trust domain (X509-SVID spec, section 4):
two URI SANs would let one certificate answer to two names, so it is refused rather than
"pick the first".
"""

from __future__ import annotations

from collections.abc import Set
from datetime import datetime
from typing import TypeAlias

from hybridmesh.identity._der import CertFacts
from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId

__all__ = ["Expected", "PeerIdentityError", "check_expected", "check_validity", "leaf_identity"]

Expected: TypeAlias = SpiffeId | Set[SpiffeId] | None


class PeerIdentityError(Exception):
    """The peer's certificate does not prove an acceptable SPIFFE identity."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def leaf_identity(leaf: CertFacts, trust_domain: str) -> SpiffeId:
    """The SPIFFE ID a leaf certificate asserts, after the X509-SVID leaf checks."""
    _check_leaf_constraints(leaf)
    uris = leaf.uri_sans
    if len(uris) != 1:
        raise PeerIdentityError(f"certificate has {len(uris)} URI SANs; an SVID has exactly one")
    try:
        identity = SpiffeId.parse(uris[0])
    except InvalidSpiffeId as exc:
        raise PeerIdentityError(f"URI SAN is not a valid SPIFFE ID: {exc}") from None
    if identity.trust_domain != trust_domain:
        raise PeerIdentityError(f"peer {identity} is not in trust domain {trust_domain!r}")
    if not identity.path:
        raise PeerIdentityError(f"{identity} names a trust domain, not a workload")
    return identity


def _check_leaf_constraints(leaf: CertFacts) -> None:
    if leaf.is_ca:
        raise PeerIdentityError("certificate is a CA certificate, not a leaf")
    usage = leaf.key_usage
    if usage is None:
        raise PeerIdentityError("leaf certificate has no keyUsage")
    if "key_cert_sign" in usage or "crl_sign" in usage or "digital_signature" not in usage:
        raise PeerIdentityError(
            "leaf keyUsage must have digitalSignature and neither keyCertSign nor cRLSign")


def check_validity(leaf: CertFacts, identity: SpiffeId, now: datetime) -> None:
    """`now` must fall in [not_before, not_after)."""
    if now < leaf.not_before:
        raise PeerIdentityError(f"certificate of {identity} is not valid yet")
    if now >= leaf.not_after:
        raise PeerIdentityError(f"certificate of {identity} expired at {leaf.not_after:%FT%TZ}")


def check_expected(identity: SpiffeId, expected: Expected) -> None:
    """Exact equality with the one identity (or one of the set) the caller accepts."""
    if expected is None:
        return
    if isinstance(expected, SpiffeId):
        if identity != expected:
            raise PeerIdentityError(f"peer is {identity}, expected {expected}")
        return
    if identity not in expected:
        shown = ", ".join(sorted(str(e) for e in expected)) or "nothing"
        raise PeerIdentityError(f"peer is {identity}, expected one of: {shown}")
