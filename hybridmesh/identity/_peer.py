"""Peer validation: who is on the other end of an mTLS connection (private; re-exported
from `hybridmesh.identity.workload`).

A certificate proves an identity only if (1) it chains to our trust bundle, (2) it is a
leaf (not a CA), valid now, and (3) it carries exactly one URI SAN that is a canonical
SPIFFE ID in the bundle's trust domain. Two URI SANs would let one certificate answer to
two names, so it is refused rather than "pick the first" (X509-SVID spec, section 2).
The name is then compared by exact equality with what the caller expected.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from datetime import UTC, datetime
from typing import TypeAlias

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, VerificationError

from hybridmesh.identity.bundle import TrustBundle
from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId

__all__ = ["Expected", "PeerIdentityError", "leaf_identity", "validate_peer_certificate"]

Expected: TypeAlias = SpiffeId | Set[SpiffeId] | None
_MAX_CHAIN_DEPTH = 4


class PeerIdentityError(Exception):
    """The peer's certificate does not prove an acceptable SPIFFE identity."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


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
    identity = leaf_identity(leaf, trust_bundle.trust_domain)
    if now < leaf.not_valid_before_utc:
        raise PeerIdentityError(f"certificate of {identity} is not valid yet")
    if now >= leaf.not_valid_after_utc:
        raise PeerIdentityError(f"certificate of {identity} expired at "
                                f"{leaf.not_valid_after_utc:%FT%TZ}")
    _verify_chain(leaf, certs[1:], trust_bundle, now)
    _check_expected(identity, expected)
    return identity


def leaf_identity(leaf: x509.Certificate, trust_domain: str) -> SpiffeId:
    """The SPIFFE ID a leaf certificate asserts, after the X509-SVID leaf checks."""
    extensions = _extensions(leaf)
    _check_leaf_constraints(extensions)
    uris = _uri_sans(extensions)
    if len(uris) != 1:
        raise PeerIdentityError(f"certificate has {len(uris)} URI SANs; an SVID has exactly one")
    try:
        identity = SpiffeId.parse(uris[0])
    except InvalidSpiffeId as exc:
        raise PeerIdentityError(f"URI SAN is not a valid SPIFFE ID: {exc}") from None
    if identity.trust_domain != trust_domain:
        raise PeerIdentityError(
            f"peer {identity} is not in trust domain {trust_domain!r}")
    if not identity.path:
        raise PeerIdentityError(f"{identity} names a trust domain, not a workload")
    return identity


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


def _check_leaf_constraints(extensions: x509.Extensions) -> None:
    try:
        constraints: x509.BasicConstraints | None = extensions.get_extension_for_class(
            x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise PeerIdentityError("certificate is a CA certificate, not a leaf")
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise PeerIdentityError("leaf certificate has no keyUsage") from None
    if usage.key_cert_sign or usage.crl_sign or not usage.digital_signature:
        raise PeerIdentityError(
            "leaf keyUsage must have digitalSignature and neither keyCertSign nor cRLSign")


def _uri_sans(extensions: x509.Extensions) -> list[str]:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


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


def _check_expected(identity: SpiffeId, expected: Expected) -> None:
    if expected is None:
        return
    if isinstance(expected, SpiffeId):
        if identity != expected:
            raise PeerIdentityError(f"peer is {identity}, expected {expected}")
        return
    if identity not in expected:
        shown = ", ".join(sorted(str(e) for e in expected)) or "nothing"
        raise PeerIdentityError(f"peer is {identity}, expected one of: {shown}")
