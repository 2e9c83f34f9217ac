"""A bench-local CA for the Envoy sidecars' SVIDs (``cryptography``), and writing them out.

Why not the lab's CA: it signs only for a pod's bootstrap token, and the lab gives tokens
only to its own sidecars (the ``envoy-sidecar-mtls`` pods have placement ``none``, so they
have none); forging tokens would mean reaching into the lab daemon's secret. In Istio the
Envoys get their SVIDs from istiod's CA; here the bench stands in for istiod, as it stands in
for the injector and for xDS. The certificates have the mesh's shape exactly: ECDSA P-256,
one URI SAN ``spiffe://<td>/ns/<ns>/sa/<sa>``, server and client auth, 24 h.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hybridmesh.bench.envoy_tls import EnvoyTls

__all__ = ["BenchCA", "write_pod_tls"]

_TTL = timedelta(hours=24)
_SKEW = timedelta(minutes=5)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class BenchCA:
    """A self-signed root that signs leaf SVIDs directly (no intermediate, as the lab's)."""

    def __init__(self, trust_domain: str = "cluster.local") -> None:
        self.trust_domain = trust_domain
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                x509.NameAttribute(NameOID.COMMON_NAME, "hybridmesh bench CA"),
            ]
        )
        self._subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        now = datetime.now(UTC)
        self.root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + _TTL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def bundle_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def issue(self, spiffe: str) -> tuple[bytes, bytes]:
        """A fresh key and its certificate for ``spiffe``: (certificate PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(self._subject)
            .issuer_name(self.root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + _TTL)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=not ca, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def write_pod_tls(
    ca: BenchCA, directory: Path, spiffe: str, *, owner_uid: int | None, permissive: bool
) -> EnvoyTls:
    """Issue ``spiffe``'s SVID into ``directory`` (0700, the Envoy's uid), key 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    cert, key = ca.issue(spiffe)
    files = {"cert.pem": cert, "key.pem": key, "bundle.pem": ca.bundle_pem}
    for name, data in files.items():
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if owner_uid is not None:
            os.chown(path, owner_uid, owner_uid)
    if owner_uid is not None:
        os.chown(directory, owner_uid, owner_uid)
    return EnvoyTls(
        cert_chain=str(directory / "cert.pem"),
        private_key=str(directory / "key.pem"),
        trust_bundle=str(directory / "bundle.pem"),
        trust_domain=ca.trust_domain,
        permissive=permissive,
    )
