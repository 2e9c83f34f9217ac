"""The small DER reader (`_der`) agrees with `cryptography` on every field the mesh reads,
and refuses malformed input with `DerError` only."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridmesh.identity import _x509
from hybridmesh.identity._der import DerError, csr_public_key, parse_certificate, pem_blocks
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.workload import make_csr, new_key

if TYPE_CHECKING:
    from conftest import Pki

DER = serialization.Encoding.DER


def _same_as_cryptography(cert: x509.Certificate) -> None:
    facts = parse_certificate(cert.public_bytes(DER))
    assert facts.serial == cert.serial_number
    assert facts.not_before == cert.not_valid_before_utc
    assert facts.not_after == cert.not_valid_after_utc
    assert facts.issuer == cert.issuer.rfc4514_string()
    assert facts.spki == _x509.spki_der(cert.public_key())
    assert facts.key_type == _x509.describe_public_key(cert.public_key())
    assert facts.spki_sha256 == _x509.spki_sha256(cert.public_key())
    try:
        ca: bool | None = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = None
    assert facts.is_ca == ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(facts.uri_sans) == san.get_values_for_type(x509.UniformResourceIdentifier)


def test_issued_leaf_and_ca_read_like_cryptography(pki: Pki) -> None:
    svid = pki.svid()
    leaf = x509.load_pem_x509_certificates(svid.chain_pem)[0]
    _same_as_cryptography(leaf)
    facts = parse_certificate(leaf.public_bytes(DER))
    assert facts.is_ca is False
    assert facts.key_usage == frozenset({"digital_signature"})
    root = parse_certificate(pki.root.public_bytes(DER))
    assert root.is_ca is True
    assert root.key_usage == frozenset({"digital_signature", "key_cert_sign", "crl_sign"})


def test_forged_leaves_expose_what_the_leaf_rules_need(pki: Pki) -> None:
    cert, _ = pki.forge(uris=["spiffe://example.org/a", "spiffe://example.org/b"],
                        dns=["x.example"], ca=True, key_cert_sign=True)
    _same_as_cryptography(cert)
    facts = parse_certificate(cert.public_bytes(DER))
    assert facts.uri_sans == ("spiffe://example.org/a", "spiffe://example.org/b")
    assert facts.is_ca is True and "key_cert_sign" in facts.key_usage  # type: ignore[operator]
    no_san, _ = pki.forge(san=False)
    assert parse_certificate(no_san.public_bytes(DER)).uri_sans == ()


def _self_signed(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, name: x509.Name,
                 not_after: datetime) -> x509.Certificate:
    now = datetime(2020, 1, 1, tzinfo=UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(0x7F00FF)
            .not_valid_before(now).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://t/x")]), critical=False)
            .sign(key, hashes.SHA256()))


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP384R1()),
                                 rsa.generate_private_key(65537, 2048)],
                         ids=["p384", "rsa2048"])
def test_other_key_types_names_and_generalized_time(
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "A, \"B\" + C"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "#lead")])
    after = datetime(2051, 6, 1, 12, 0, 0, tzinfo=UTC)  # past 2049: GeneralizedTime
    cert = _self_signed(key, name, after)
    _same_as_cryptography(cert)
    assert parse_certificate(cert.public_bytes(DER)).key_usage is None


def test_csr_public_key_is_the_keys_spki() -> None:
    key = new_key()
    pem = make_csr(key, SpiffeId.parse("spiffe://t/ns/a/sa/b"))
    (der,) = pem_blocks(pem, "CERTIFICATE REQUEST")
    assert csr_public_key(der) == _x509.spki_der(key.public_key())
    with pytest.raises(DerError):
        csr_public_key(der[:-5])


def test_pem_blocks_filters_by_label_and_refuses_bad_base64(pki: Pki) -> None:
    root = pki.root.public_bytes(serialization.Encoding.PEM)
    text = b"junk\n" + root + b"-----BEGIN OTHER-----\nAAAA\n-----END OTHER-----\n" + root
    assert pem_blocks(text, "CERTIFICATE") == [pki.root.public_bytes(DER)] * 2
    assert pem_blocks(text, "PRIVATE KEY") == []
    with pytest.raises(DerError, match="bad base64"):
        pem_blocks(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----", "CERTIFICATE")


def test_trailing_bytes_and_wrong_structures_are_refused(pki: Pki) -> None:
    der = pki.root.public_bytes(DER)
    for bad in (der + b"\x00", der[:-1], b"\x04\x00", b"", b"\x30\x80\x00\x00",
                b"\x30\x03\x02\x01\x01"):
        with pytest.raises(DerError):
            parse_certificate(bad)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_certificates_parse_or_raise_der_error(data: st.DataObject) -> None:
    """h11's fuzzer invariant: every input parses or raises the typed error, nothing else."""
    der = bytearray(base64.b64decode(_SAMPLE))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(der) - 1))
        der[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(der)))
    with contextlib.suppress(DerError):
        parse_certificate(bytes(der[:cut]) if data.draw(st.booleans()) else bytes(der))


def _sample() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sample")])
    cert = _self_signed(key, name, datetime.now(UTC) + timedelta(days=1))
    return base64.b64encode(cert.public_bytes(DER)).decode()


_SAMPLE = _sample()
