"""Peer validation: who is on the other end of an mTLS connection (private; re-exported
from `hybridmesh.identity.workload`).

A certificate proves an identity only if (1) it chains to our trust bundle, (2) it is a
leaf (not a CA), valid now, and (3) it carries exactly one URI SAN that is a canonical
SPIFFE ID in the bundle's trust domain. Two URI SANs would let one certificate answer to
two names, so it is refused rather than "pick the first" (X509-SVID spec, section 2).
The name is then compared by exact equality with what the caller expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, VerificationError

from hybridmesh.identity import _leaf
from hybridmesh.identity._der import CertFacts, DerError, parse_certificate
from hybridmesh.identity._leaf import Expected, PeerIdentityError, check_expected, check_validity
from hybridmesh.identity.bundle import TrustBundle
from hybridmesh.identity.spiffe import SpiffeId

__all__ = ["Expected", "PeerIdentityError", "leaf_identity", "validate_peer_certificate"]

_MAX_CHAIN_DEPTH = 4


def validate_peer_certificate(der_chain: Sequence[bytes], trust_bundle: TrustBundle,
                              expected: Expected, *, now: datetime | None = None) -> SpiffeId:
    """Return the peer's SPIFFE ID or raise `PeerIdentityError` with the reason.

    `der_chain` is the peer's leaf first, then any intermediates it sent. `expected` is
    the one identity (or set of identities) the caller will accept, or None to accept any
    identity of the trust domain (server side: authorization decides later).
    """
    if not der_chain:
        raise PeerIdentityError("peer presented no certificate")
    certs = [_load_der(der) for der in der_chain]
    leaf, now = certs[0], now or datetime.now(UTC)
    facts = _facts(leaf)
    identity = _leaf.leaf_identity(facts, trust_bundle.trust_domain)
    check_validity(facts, identity, now)
    _verify_chain(leaf, certs[1:], trust_bundle, now)
    check_expected(identity, expected)
    return identity


def leaf_identity(leaf: x509.Certificate, trust_domain: str) -> SpiffeId:
    """The SPIFFE ID a leaf certificate asserts, after the X509-SVID leaf checks (`_leaf`)."""
    return _leaf.leaf_identity(_facts(leaf), trust_domain)


def _facts(leaf: x509.Certificate) -> CertFacts:
    """The DER facts the leaf rules read; `cryptography` parsed the extensions first, so a
    malformed one is reported the way it always was."""
    _extensions(leaf)
    try:
        return parse_certificate(leaf.public_bytes(Encoding.DER))
    except DerError as exc:
        raise PeerIdentityError(f"certificate extensions are malformed: {exc}") from None


# What `cryptography` raises for malformed certificates; not all are ValueErrors.
_PARSE_ERRORS = (ValueError, x509.InvalidVersion, x509.DuplicateExtension,
                 x509.UnsupportedGeneralNameType)


def _load_der(der: bytes) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = cert.not_valid_before_utc, cert.not_valid_after_utc  # parsed lazily
    except _PARSE_ERRORS:
        raise PeerIdentityError("peer certificate is not valid DER X.509") from None
    if cert.serial_number <= 0:  # RFC 5280; cryptography only warns (for now)
        raise PeerIdentityError("peer certificate has a non-positive serial number")
    return cert


def _extensions(leaf: x509.Certificate) -> x509.Extensions:
    try:
        return leaf.extensions
    except _PARSE_ERRORS as exc:
        raise PeerIdentityError(f"certificate extensions are malformed: {exc}") from None


def _verify_chain(leaf: x509.Certificate, intermediates: list[x509.Certificate],
                  bundle: TrustBundle, now: datetime) -> None:
    """Signatures, validity of every link and RFC 5280 profile checks, by `cryptography`."""
    verifier = (PolicyBuilder().store(bundle.store).time(now)
                .max_chain_depth(_MAX_CHAIN_DEPTH).build_client_verifier())
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise PeerIdentityError(
            f"certificate does not chain to the {bundle.trust_domain!r} trust bundle: {exc}",
        ) from None
