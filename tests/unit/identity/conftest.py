"""Fixtures for identity tests: a CA whose root key the tests hold, so they can forge
certificates the real CA would never issue (two URI SANs, CA:true leaves, ...)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hybridmesh.identity.ca import MeshCA
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.workload import Svid, make_csr, new_key

TD = "example.org"


@dataclass
class Pki:
    """A root (key known to the test) and the MeshCA issuing directly from it."""

    trust_domain: str
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    ca: MeshCA

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def svid(self, namespace: str = "default", service_account: str = "web",
             ttl: timedelta = timedelta(hours=1)) -> Svid:
        """A real SVID issued through the CSR path."""
        key = new_key()
        identity = SpiffeId.for_workload(self.trust_domain, namespace, service_account)
        return Svid(self.ca.sign(make_csr(key, identity), identity, ttl), key, self.ca.bundle)

    def forge(self, *, uris: list[str] | None = None, dns: list[str] | None = None,
              ca: bool = False, key_cert_sign: bool = False,
              not_before: datetime | None = None, not_after: datetime | None = None,
              san: bool = True) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf signed by this root with whatever (mis)features a test wants."""
        now = datetime.now(UTC)
        key = new_key()
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris or []]
        names += [x509.DNSName(d) for d in dns or []]
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
                   .issuer_name(self.root.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(not_before or now - timedelta(minutes=1))
                   .not_valid_after(not_after or now + timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(_usage(key_cert_sign), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]),
                                  critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.root_key.public_key()), critical=False))
        if san and names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.root_key, hashes.SHA256()), key


def _usage(key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=key_cert_sign, crl_sign=key_cert_sign,
                         encipher_only=False, decipher_only=False)


def make_root(trust_domain: str, *, days: int = 30) -> tuple[ec.EllipticCurvePrivateKey,
                                                           x509.Certificate]:
    """A plain self-signed root built without MeshCA (a 'user-supplied' root)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test root {trust_domain}")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def build_pki(trust_domain: str) -> Pki:
    """A root the test controls, loaded into a MeshCA that issues from it directly."""
    root_key, root = make_root(trust_domain)
    root_pem = root.public_bytes(serialization.Encoding.PEM)
    ca = MeshCA.from_pem(trust_domain, root_pem, key_pem(root_key), root_pem)
    return Pki(trust_domain, root_key, root, ca)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return build_pki(TD)


@pytest.fixture(scope="module")
def other_pki() -> Pki:
    """A second, unrelated CA for the same trust domain name (a rogue or foreign mesh)."""
    return build_pki(TD)


@pytest.fixture(scope="module")
def foreign_pki() -> Pki:
    """A CA for another trust domain."""
    return build_pki("other.example")


@pytest.fixture
def der() -> Callable[[x509.Certificate], bytes]:
    return lambda cert: cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def user_root() -> tuple[bytes, bytes]:
    """A user-supplied root as (cert PEM, key PEM), for intermediate-CA tests."""
    key, cert = make_root(TD, days=30)
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)
