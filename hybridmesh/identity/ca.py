"""The mesh CA: issues X509-SVIDs for identities the *caller* has already decided.

Secure naming hinges on one rule: the control plane decides which identity a proxy gets
(from its verified bootstrap credential, see `bootstrap`), and the CA refuses any CSR
that asks for something else. The CSR only proves possession of the key; every extension
of the issued certificate is chosen here.

A `MeshCA` is either a self-signed root (EC P-256) or an intermediate under a root the
user supplies, in which case the user's root alone is the trust bundle and issued chains
carry the intermediate.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.x509.oid import NameOID

from hybridmesh.identity import _x509
from hybridmesh.identity.bootstrap import DEFAULT_TOKEN_TTL, BootstrapClaims, BootstrapTokens
from hybridmesh.identity.bundle import InvalidBundle, TrustBundle, load_pem_chain
from hybridmesh.identity.spiffe import SpiffeId, validate_trust_domain

__all__ = ["CLOCK_SKEW", "DEFAULT_CA_TTL", "CaError", "CsrRejected", "MeshCA"]

CLOCK_SKEW: Final = timedelta(minutes=2)  # not-before backdating for peers' clock drift
DEFAULT_CA_TTL: Final = timedelta(days=365)


class CaError(Exception):
    """The CA cannot act: unusable root material, expired CA, identity outside its domain."""


class CsrRejected(ValueError):
    """A CSR is malformed or asks for something other than the identity being issued."""


class MeshCA:
    """Signs leaf SVIDs for one trust domain and mints/verifies bootstrap tokens."""

    def __init__(self, trust_domain: str, certificate: x509.Certificate,
                 key: CertificateIssuerPrivateKeyTypes, parents: Sequence[x509.Certificate],
                 bundle: TrustBundle, *, bootstrap_secret: bytes | None = None) -> None:
        """`parents`: certificates between `certificate` and a bundle root (usually none)."""
        validate_trust_domain(trust_domain)
        if bundle.trust_domain != trust_domain:
            raise CaError(f"bundle is for {bundle.trust_domain!r}, CA for {trust_domain!r}")
        if not _x509.keys_match(certificate, key):
            raise CaError("CA key does not match the CA certificate")
        _check_is_ca(certificate)
        _check_chain([certificate, *parents], bundle)
        self._trust_domain = trust_domain
        self._cert = certificate
        self._key = key
        self._bundle = bundle
        # Issued chains carry everything up to, but not including, a bundle root: peers
        # already have the roots, and a root in the chain is dead weight in every handshake.
        self._chain_pem = b"".join(_x509.pem(c) for c in (certificate, *parents)
                                   if c not in bundle.certificates)
        self._not_after = _x509.validity_end([certificate, *parents])
        self._tokens = BootstrapTokens(trust_domain, bootstrap_secret)

    @classmethod
    def create_root(cls, trust_domain: str, *, ttl: timedelta = DEFAULT_CA_TTL,
                    now: datetime | None = None,
                    bootstrap_secret: bytes | None = None) -> MeshCA:
        """A new self-signed EC P-256 root that is also the issuing CA."""
        validate_trust_domain(trust_domain)
        key = ec.generate_private_key(ec.SECP256R1())
        now = now or datetime.now(UTC)
        name = _ca_name(trust_domain, "root")
        builder = _ca_builder(name, name, key, now - CLOCK_SKEW, now + ttl)
        builder = _x509.ca_extensions(builder, trust_domain, subject_key=key.public_key(),
                                      issuer=None, issuer_key=key.public_key(),
                                      path_length=None)
        cert = builder.sign(key, _x509.signature_hash(key))
        bundle = TrustBundle(trust_domain, _x509.pem(cert))
        return cls(trust_domain, cert, key, (), bundle, bootstrap_secret=bootstrap_secret)

    @classmethod
    def create_intermediate(cls, trust_domain: str, root_cert_pem: bytes, root_key_pem: bytes,
                            *, ttl: timedelta = DEFAULT_CA_TTL, now: datetime | None = None,
                            bootstrap_secret: bytes | None = None) -> MeshCA:
        """A new EC P-256 intermediate signed by the user's root (`root_cert_pem` may carry
        the root's own chain after it; its last certificate must be self-signed)."""
        validate_trust_domain(trust_domain)
        root_chain = _load_chain(root_cert_pem, "root certificate")
        parent, parent_key = root_chain[0], _load_key(root_key_pem)
        if not _x509.keys_match(parent, parent_key):
            raise CaError("root key does not match the root certificate")
        _check_can_sign_intermediate(parent)
        key = ec.generate_private_key(ec.SECP256R1())
        now = now or datetime.now(UTC)
        not_after = min(now + ttl, _x509.validity_end(root_chain))
        builder = _ca_builder(_ca_name(trust_domain, "intermediate"), parent.subject, key,
                              max(now - CLOCK_SKEW, parent.not_valid_before_utc), not_after)
        builder = _x509.ca_extensions(builder, trust_domain, subject_key=key.public_key(),
                                      issuer=parent, issuer_key=_public_issuer_key(parent),
                                      path_length=0)
        cert = builder.sign(parent_key, _x509.signature_hash(parent_key))
        bundle = TrustBundle(trust_domain, _x509.pem(root_chain[-1]))
        return cls(trust_domain, cert, key, root_chain[:-1], bundle,
                   bootstrap_secret=bootstrap_secret)

    @classmethod
    def from_pem(cls, trust_domain: str, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes,
                 *, bootstrap_secret: bytes | None = None) -> MeshCA:
        """Reload a CA: its certificate (+ parents up to a root), key, and bundle roots."""
        chain = _load_chain(chain_pem, "CA certificate chain")
        try:
            bundle = TrustBundle(trust_domain, bundle_pem)
        except InvalidBundle as exc:
            raise CaError(str(exc)) from None
        return cls(trust_domain, chain[0], _load_key(key_pem), chain[1:], bundle,
                   bootstrap_secret=bootstrap_secret)

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def bundle(self) -> TrustBundle:
        return self._bundle

    @property
    def bundle_pem(self) -> bytes:
        return self._bundle.pem

    @property
    def not_after(self) -> datetime:
        """No leaf outlives this (the earliest expiry in the CA's own chain)."""
        return self._not_after

    def __repr__(self) -> str:
        return f"MeshCA(trust_domain={self._trust_domain!r}, not_after={self._not_after:%FT%TZ})"

    def sign(self, csr_pem: bytes, identity: SpiffeId, ttl: timedelta, *,
             now: datetime | None = None) -> bytes:
        """Issue `identity` for the CSR's key; return the leaf PEM followed by the CA chain.

        Raises `CsrRejected` if the CSR is invalid or names anything but `identity`, and
        `CaError` if `identity` is outside this trust domain or the CA has expired.
        """
        self._check_identity(identity)
        csr = _load_csr(csr_pem)
        _check_requested_names(csr, identity)
        try:
            public_key = _x509.check_leaf_public_key(csr.public_key())
        except ValueError as exc:
            raise CsrRejected(str(exc)) from None
        if ttl <= timedelta(0):
            raise ValueError("certificate ttl must be positive")
        now = now or datetime.now(UTC)
        not_after = min(now + ttl, self._not_after)
        if not_after <= now:
            raise CaError(f"CA expired at {self._not_after:%FT%TZ}; rotate the CA")
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([]))
                   .issuer_name(self._cert.subject)
                   .public_key(public_key)
                   .serial_number(_x509.random_serial())
                   .not_valid_before(max(now - CLOCK_SKEW, self._cert.not_valid_before_utc))
                   .not_valid_after(not_after))
        builder = _x509.leaf_extensions(builder, identity, public_key, self._cert)
        leaf = builder.sign(self._key, _x509.signature_hash(self._key))
        return _x509.pem(leaf) + self._chain_pem

    def _check_identity(self, identity: SpiffeId) -> None:
        if not isinstance(identity, SpiffeId):
            raise TypeError("identity must be a SpiffeId (parse it first)")
        if identity.trust_domain != self._trust_domain:
            raise CaError(f"this CA issues for {self._trust_domain!r}, not {identity}")
        if not identity.path:
            raise CaError("a workload identity needs a path (the bare trust domain is the CA's)")

    def issue_bootstrap_token(self, namespace: str, service_account: str, pod: str, *,
                              ttl: timedelta = DEFAULT_TOKEN_TTL,
                              now: datetime | None = None) -> str:
        """Mint the per-pod credential proving (namespace, service_account) for `pod`."""
        return self._tokens.issue(namespace, service_account, pod, ttl=ttl, now=now)

    def verify_bootstrap_token(self, token: str, *,
                               now: datetime | None = None) -> BootstrapClaims:
        """Verify a token this CA minted; raises `InvalidBootstrapToken`."""
        return self._tokens.verify(token, now=now)

    def identity_for(self, claims: BootstrapClaims) -> SpiffeId:
        """The identity a verified token entitles its holder to."""
        return SpiffeId.for_workload(self._trust_domain, claims.namespace,
                                     claims.service_account)


def _ca_name(trust_domain: str, role: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hybridmesh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} {role} CA")])


def _ca_builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
                not_before: datetime, not_after: datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(_x509.random_serial())
            .not_valid_before(not_before).not_valid_after(not_after))


def _load_chain(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        return load_pem_chain(pem, what)
    except InvalidBundle as exc:
        raise CaError(str(exc)) from None


def _load_key(pem: bytes) -> CertificateIssuerPrivateKeyTypes:
    try:
        return _x509.issuer_private_key(serialization.load_pem_private_key(pem, password=None))
    except (ValueError, TypeError) as exc:
        raise CaError(f"CA key: {exc}") from None


def _public_issuer_key(cert: x509.Certificate) -> CertificateIssuerPublicKeyTypes:
    try:
        return _x509.issuer_public_key(cert)
    except ValueError as exc:
        raise CaError(str(exc)) from None


def _check_is_ca(cert: x509.Certificate) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CaError(f"{cert.subject.rfc4514_string()!r} lacks basicConstraints or "
                      "keyUsage; it is not a CA certificate") from None
    if not constraints.ca or not usage.key_cert_sign:
        raise CaError(f"{cert.subject.rfc4514_string()!r} is not allowed to sign certificates")


def _check_can_sign_intermediate(cert: x509.Certificate) -> None:
    _check_is_ca(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if constraints.path_length == 0:
        raise CaError("root has pathLenConstraint 0: it cannot sign an intermediate")


def _check_chain(chain: list[x509.Certificate], bundle: TrustBundle) -> None:
    """Each certificate must be signed by the next; the last by (or be) a bundle root."""
    for child, parent in itertools.pairwise(chain):
        if not _issued_by(child, parent):
            raise CaError(f"{child.subject.rfc4514_string()!r} is not signed by the next "
                          "certificate in the chain")
    last, anchors = chain[-1], bundle.certificates
    if last not in anchors and not any(_issued_by(last, root) for root in anchors):
        raise CaError(f"{last.subject.rfc4514_string()!r} does not chain to the bundle")


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise CsrRejected("not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise CsrRejected("CSR signature does not verify (no proof of key possession)")
    return csr


def _check_requested_names(csr: x509.CertificateSigningRequest, identity: SpiffeId) -> None:
    """The CSR must ask for exactly `identity` and nothing else the CA would have to vet."""
    for attribute in csr.subject:
        if attribute.oid != NameOID.COMMON_NAME or attribute.value != str(identity):
            raise CsrRejected(f"CSR subject {csr.subject.rfc4514_string()!r} differs from "
                              f"{identity} (use an empty subject)")
    requested: list[x509.GeneralName] | None = None
    for extension in csr.extensions:
        if not isinstance(extension.value, x509.SubjectAlternativeName):
            raise CsrRejected(f"CSR requests extension {extension.oid.dotted_string}; "
                              "the CA chooses every extension itself")
        requested = list(extension.value)
    if requested is None:
        raise CsrRejected(f"CSR names no identity; it must request exactly {identity}")
    if requested != [x509.UniformResourceIdentifier(str(identity))]:
        shown = ", ".join(str(getattr(n, "value", n)) for n in requested)
        raise CsrRejected(f"CSR requests [{shown}] but the caller authorized only {identity}")
