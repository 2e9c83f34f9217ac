"""MeshCA: issues exactly the identity it is told to, with the X509-SVID leaf profile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hybridmesh.identity.ca import CLOCK_SKEW, CaError, CsrRejected, MeshCA
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.workload import make_csr, new_key, validate_peer_certificate

if TYPE_CHECKING:
    from conftest import Pki

WEB = SpiffeId.for_workload("example.org", "shop", "web")


def _leaf(chain_pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificates(chain_pem)[0]


def _ders(chain_pem: bytes) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER)
            for c in x509.load_pem_x509_certificates(chain_pem)]


def _csr(builder: x509.CertificateSigningRequestBuilder, key: object = None) -> bytes:
    signer = key if key is not None else new_key()
    csr = builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM)


def _san(*names: x509.GeneralName, subject: x509.Name | None = None,
         ) -> x509.CertificateSigningRequestBuilder:
    return (x509.CertificateSigningRequestBuilder().subject_name(subject or x509.Name([]))
            .add_extension(x509.SubjectAlternativeName(list(names)), critical=True))


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.create_root("example.org")


def test_issues_exactly_the_identity_with_the_svid_profile(ca: MeshCA) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    leaf = _leaf(ca.sign(make_csr(new_key(), WEB), WEB, timedelta(hours=1), now=now))
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # the subject is empty, so RFC 5280 wants SAN critical
    assert list(san.value) == [x509.UniformResourceIdentifier(str(WEB))]
    assert leaf.subject == x509.Name([])
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    assert not usage.key_encipherment
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.not_valid_before_utc == now - CLOCK_SKEW
    assert leaf.not_valid_after_utc == now + timedelta(hours=1)
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.value.digest
    ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(leaf.public_key()).digest
    leaf.verify_directly_issued_by(ca.certificate)


def test_serials_are_random_128_bit(ca: MeshCA) -> None:
    serials = {_leaf(ca.sign(make_csr(new_key(), WEB), WEB, timedelta(hours=1))).serial_number
               for _ in range(20)}
    assert len(serials) == 20
    assert all(0 < s < 2**128 for s in serials)
    assert max(serials).bit_length() > 100  # random, not a counter


def test_root_ca_chain_holds_only_the_leaf(ca: MeshCA) -> None:
    chain = ca.sign(make_csr(new_key(), WEB), WEB, timedelta(hours=1))
    assert len(x509.load_pem_x509_certificates(chain)) == 1
    assert validate_peer_certificate(_ders(chain), ca.bundle, WEB) == WEB


def test_leaf_never_outlives_the_ca() -> None:
    short = MeshCA.create_root("example.org", ttl=timedelta(hours=2))
    leaf = _leaf(short.sign(make_csr(new_key(), WEB), WEB, timedelta(days=30)))
    assert leaf.not_valid_after_utc == short.not_after


def test_expired_ca_refuses_to_sign() -> None:
    old = MeshCA.create_root("example.org", ttl=timedelta(hours=1),
                             now=datetime.now(UTC) - timedelta(hours=2))
    with pytest.raises(CaError, match="CA expired"):
        old.sign(make_csr(new_key(), WEB), WEB, timedelta(hours=1))


def test_ca_certificate_is_a_spiffe_signing_authority(ca: MeshCA) -> None:
    cert = ca.certificate
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    uris = cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["spiffe://example.org"]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert ca.bundle_pem == cert.public_bytes(serialization.Encoding.PEM)


OTHER = SpiffeId.for_workload("example.org", "shop", "admin")


@pytest.mark.parametrize(("builder", "reason"), [
    (_san(x509.UniformResourceIdentifier(str(OTHER))), "authorized only"),
    (_san(x509.UniformResourceIdentifier(str(WEB)), x509.UniformResourceIdentifier(str(OTHER))),
     "authorized only"),
    (_san(x509.UniformResourceIdentifier(str(WEB)), x509.DNSName("web.shop.svc")),
     "authorized only"),
    (_san(x509.UniformResourceIdentifier(str(WEB).upper().replace("SPIFFE", "spiffe"))),
     "authorized only"),
    (_san(x509.DNSName("web")), "authorized only"),
    (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])), "names no identity"),
    (_san(x509.UniformResourceIdentifier(str(WEB)), subject=x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evil")])), "CSR subject"),
    (_san(x509.UniformResourceIdentifier(str(WEB)), subject=x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, str(OTHER))])), "CSR subject"),
    (_san(x509.UniformResourceIdentifier(str(WEB))).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True), "requests extension"),
])
def test_refuses_csrs_asking_for_anything_else(ca: MeshCA, builder:
                                                x509.CertificateSigningRequestBuilder,
                                                reason: str) -> None:
    with pytest.raises(CsrRejected, match=reason):
        ca.sign(_csr(builder), WEB, timedelta(hours=1))


def test_accepts_a_cn_equal_to_the_identity(ca: MeshCA) -> None:
    builder = _san(x509.UniformResourceIdentifier(str(WEB)), subject=x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, str(WEB))]))
    leaf = _leaf(ca.sign(_csr(builder), WEB, timedelta(hours=1)))
    assert leaf.subject == x509.Name([])  # the CA chooses the subject, not the CSR


def test_refuses_a_csr_whose_signature_does_not_verify(ca: MeshCA) -> None:
    pem = make_csr(new_key(), WEB)
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the ECDSA signature
    bad = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrRejected, match="signature"):
        ca.sign(bad, WEB, timedelta(hours=1))


def test_refuses_garbage_and_weak_keys(ca: MeshCA) -> None:
    with pytest.raises(CsrRejected, match="not a PEM"):
        ca.sign(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", WEB, timedelta(hours=1))
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CsrRejected, match="unsupported leaf key: RSA 1024"):
        ca.sign(_csr(_san(x509.UniformResourceIdentifier(str(WEB))), weak), WEB,
                timedelta(hours=1))


def test_refuses_identities_it_cannot_vouch_for(ca: MeshCA) -> None:
    csr = make_csr(new_key(), WEB)
    foreign = SpiffeId.for_workload("other.org", "shop", "web")
    with pytest.raises(CaError, match=r"issues for 'example\.org'"):
        ca.sign(make_csr(new_key(), foreign), foreign, timedelta(hours=1))
    with pytest.raises(CaError, match="needs a path"):
        ca.sign(csr, SpiffeId.parse("spiffe://example.org"), timedelta(hours=1))
    with pytest.raises(TypeError):
        ca.sign(csr, str(WEB), timedelta(hours=1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        ca.sign(csr, WEB, timedelta(0))


def test_intermediate_under_a_user_root(user_root: tuple[bytes, bytes]) -> None:
    root_pem, root_key_pem = user_root
    ca = MeshCA.create_intermediate("example.org", root_pem, root_key_pem,
                                    ttl=timedelta(days=365))
    assert ca.bundle_pem == root_pem
    root = x509.load_pem_x509_certificate(root_pem)
    assert ca.not_after == root.not_valid_after_utc  # capped by the root's expiry
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.path_length == 0
    chain = ca.sign(make_csr(new_key(), WEB), WEB, timedelta(hours=1))
    certs = x509.load_pem_x509_certificates(chain)
    assert [c.subject for c in certs[1:]] == [ca.certificate.subject]
    assert validate_peer_certificate(_ders(chain), ca.bundle, WEB) == WEB


def test_intermediate_rejects_mismatched_root_material(user_root: tuple[bytes, bytes],
                                                       pki: Pki) -> None:
    root_pem, root_key_pem = user_root
    other_key = new_key().private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    with pytest.raises(CaError, match="does not match"):
        MeshCA.create_intermediate("example.org", root_pem, other_key)
    with pytest.raises(CaError, match=r"not PEM|no certificates"):
        MeshCA.create_intermediate("example.org", b"junk", other_key)
    with pytest.raises(CaError, match="CA key"):
        MeshCA.create_intermediate("example.org", root_pem, b"junk")
    with pytest.raises(CaError, match="does not chain"):
        MeshCA.from_pem("example.org", root_pem, root_key_pem, pki.root_pem)


def test_from_pem_refuses_a_bundle_for_another_domain(pki: Pki) -> None:
    from hybridmesh.identity.bundle import TrustBundle

    with pytest.raises(CaError, match="bundle is for"):
        MeshCA(pki.trust_domain, pki.root, pki.root_key, (),
               TrustBundle("other.org", pki.root_pem))


def test_ca_repr_shows_no_key(ca: MeshCA) -> None:
    assert "PRIVATE" not in repr(ca)
    assert repr(ca).startswith("MeshCA(trust_domain='example.org'")
