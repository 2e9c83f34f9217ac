"""Small X.509 helpers shared by the CA and the workload side (private)."""

from __future__ import annotations

import secrets
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

from hybridmesh.identity.spiffe import SpiffeId

__all__ = [
    "ca_extensions",
    "check_leaf_public_key",
    "describe_public_key",
    "issuer_private_key",
    "issuer_public_key",
    "keys_match",
    "leaf_extensions",
    "pem",
    "random_serial",
    "signature_hash",
    "spki_der",
    "spki_sha256",
    "validity_end",
]

_SERIAL_BITS = 128
_MIN_RSA_BITS = 2048
_LEAF_CURVES = (ec.SECP256R1, ec.SECP384R1)


def random_serial() -> int:
    """A fresh, positive, 128-bit random serial (CA/B forum asks for ≥64 bits of entropy)."""
    while True:
        serial = secrets.randbits(_SERIAL_BITS)
        if serial:
            return serial


def signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    """EdDSA signs the message itself (no separate hash); everything else uses SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def issuer_private_key(key: PrivateKeyTypes) -> CertificateIssuerPrivateKeyTypes:
    """Narrow a loaded key to one that can sign certificates, or raise ValueError."""
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                  | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key
    raise ValueError(f"a {type(key).__name__} cannot sign certificates")


def issuer_public_key(cert: x509.Certificate) -> CertificateIssuerPublicKeyTypes:
    """`cert`'s public key, narrowed to a type that can verify certificate signatures."""
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey
                  | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key
    raise ValueError(f"certificate key {describe_public_key(key)} cannot sign certificates")


def check_leaf_public_key(key: PublicKeyTypes) -> CertificateIssuerPublicKeyTypes:
    """Accept the key types mesh leaves may use: EC P-256/P-384 or RSA ≥ 2048 bits."""
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _LEAF_CURVES):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= _MIN_RSA_BITS:
        return key
    raise ValueError(f"unsupported leaf key: {describe_public_key(key)}")


def describe_public_key(key: PublicKeyTypes) -> str:
    """A short human description, e.g. ``EC P-256`` (public information only)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "EC P-256", "secp384r1": "EC P-384"}.get(
            key.curve.name, f"EC {key.curve.name}")
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__.removeprefix("_").removesuffix("PublicKey") or "unknown"


def keys_match(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """True iff `key` is the private half of `cert`'s public key."""
    return spki_der(cert.public_key()) == spki_der(key.public_key())


def spki_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_sha256(key: PublicKeyTypes) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo: a public fingerprint safe to log."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki_der(key))
    return digest.finalize().hex()


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _aki(issuer: x509.Certificate | None, issuer_public: CertificateIssuerPublicKeyTypes,
         ) -> x509.AuthorityKeyIdentifier:
    """AKI from the issuer's SKI when it has one (so chains link by key id), else its key."""
    if issuer is not None:
        try:
            ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            pass
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public)


def ca_extensions(builder: x509.CertificateBuilder, trust_domain: str, *,
                  subject_key: CertificateIssuerPublicKeyTypes,
                  issuer: x509.Certificate | None,
                  issuer_key: CertificateIssuerPublicKeyTypes,
                  path_length: int | None) -> x509.CertificateBuilder:
    """Extensions of a mesh signing CA: CA:true, certSign, SKI/AKI, SAN = trust-domain ID."""
    td_id = SpiffeId(trust_domain, "")
    return (builder
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
            .add_extension(_aki(issuer, issuer_key), critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(str(td_id))]), critical=False))


def leaf_extensions(builder: x509.CertificateBuilder, identity: SpiffeId,
                    subject_key: CertificateIssuerPublicKeyTypes,
                    issuer: x509.Certificate) -> x509.CertificateBuilder:
    """X509-SVID leaf: one URI SAN (critical: the subject is empty), CA:false,
    digitalSignature only, serverAuth+clientAuth (one SVID serves both ends of mTLS)."""
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    issuer_key = issuer_public_key(issuer)
    return (builder
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(eku, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
            .add_extension(_aki(issuer, issuer_key), critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(str(identity))]), critical=True))


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


def validity_end(chain: list[x509.Certificate]) -> datetime:
    """The earliest not-after in a chain: nothing it signs may outlive it."""
    return min(cert.not_valid_after_utc for cert in chain)
