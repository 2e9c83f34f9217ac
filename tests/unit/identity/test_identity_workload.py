"""Proxy side: keys, CSRs, Svid hygiene, renewal schedule, strict peer validation."""

from __future__ import annotations

import copy
import json
import pickle
import random
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.workload import (
    InvalidSvid,
    PeerIdentityError,
    Svid,
    make_csr,
    new_key,
    private_key_pem,
    renew_at,
    validate_peer_certificate,
    write_private_key,
)

if TYPE_CHECKING:
    from conftest import Pki

Der = Callable[[x509.Certificate], bytes]
WEB = "spiffe://example.org/ns/shop/sa/web"


def test_csr_is_signed_and_names_only_the_identity() -> None:
    key = new_key()
    identity = SpiffeId.parse(WEB)
    csr = x509.load_pem_x509_csr(make_csr(key, identity))
    assert csr.is_signature_valid
    assert csr.subject == x509.Name([])
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(WEB)]
    assert csr.public_key() == key.public_key()


def test_write_private_key_is_0600_and_atomic(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "hm-key.pem"
    path.write_text("old")
    path.chmod(0o644)
    write_private_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == private_key_pem(key)
    assert [p.name for p in tmp_path.iterdir()] == ["hm-key.pem"]  # no temp left behind


def _key_material(svid: Svid) -> list[str]:
    """Every spelling of the private key a leak could take."""
    key = svid.private_key
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    scalar = key.private_numbers().private_value
    pem_body = private_key_pem(key).decode().splitlines()[1:-1]
    return [der.hex(), repr(der), str(scalar), f"{scalar:x}", *pem_body,
            "PRIVATE KEY"]


def test_describe_repr_and_str_contain_no_key_material(pki: Pki) -> None:
    svid = pki.svid("shop", "web")
    outputs = [json.dumps(svid.describe()), repr(svid), str(svid), repr(svid.private_key)]
    for secret in _key_material(svid):
        for text in outputs:
            assert secret not in text
    described = svid.describe()
    assert described["identity"] == WEB
    assert described["serial"] == f"{svid.serial:x}"
    assert described["key_type"] == "EC P-256"
    assert described["not_after"] == svid.not_after.isoformat()
    assert WEB in repr(svid)


def test_svid_cannot_be_pickled_or_copied(pki: Pki) -> None:
    svid = pki.svid()
    with pytest.raises(TypeError, match="private key"):
        pickle.dumps(svid)
    with pytest.raises(TypeError, match="private key"):
        copy.copy(svid)


def test_svid_refuses_a_key_that_does_not_match(pki: Pki) -> None:
    svid = pki.svid()
    with pytest.raises(InvalidSvid, match="does not match"):
        Svid(svid.chain_pem, new_key(), svid.bundle)


def test_svid_refuses_a_bundle_for_another_domain(pki: Pki, foreign_pki: Pki) -> None:
    svid = pki.svid()
    with pytest.raises(InvalidSvid, match=r"not in trust domain 'other\.example'"):
        Svid(svid.chain_pem, svid.private_key, foreign_pki.ca.bundle)
    with pytest.raises(InvalidSvid, match=r"no certificates|not PEM"):
        Svid(b"", svid.private_key, svid.bundle)


# -- renewal ----------------------------------------------------------------------------

def test_renew_at_is_half_life_with_bounded_jitter(pki: Pki) -> None:
    svid = pki.svid(ttl=timedelta(hours=24))
    rng = random.Random(7)
    life = svid.lifetime
    times = [renew_at(svid, svid.not_before, rng, issued=svid.not_before) for _ in range(500)]
    offsets = [(t - svid.not_before) / life for t in times]
    assert min(offsets) >= 0.45 - 1e-9
    assert max(offsets) <= 0.55 + 1e-9
    assert max(offsets) - min(offsets) > 0.08  # jitter is actually applied
    assert abs(sum(offsets) / len(offsets) - 0.5) < 0.01


def test_renew_at_never_in_the_past_nor_after_the_deadline(pki: Pki) -> None:
    svid = pki.svid(ttl=timedelta(hours=1))
    rng = random.Random(1)
    late = svid.not_before + svid.lifetime * 0.7
    start = svid.not_before
    assert renew_at(svid, late, rng, issued=start) == late  # past the plan: renew now
    very_late = svid.not_after - timedelta(seconds=1)
    deadline = svid.not_after - svid.lifetime * 0.1
    assert renew_at(svid, very_late, rng, issued=start) == deadline  # overdue: due already
    assert renew_at(svid, very_late, rng, issued=start) < svid.not_after


def test_renew_at_measures_from_issuance_not_the_backdated_not_before(pki: Pki) -> None:
    """A 2-minute SVID backdated by CLOCK_SKEW (2 min) is renewed ~1 min after it arrived,
    not at once (measured from not_before it would be past half-life on arrival)."""
    svid = pki.svid(ttl=timedelta(minutes=2))
    issued = svid.not_after - timedelta(minutes=2)
    assert svid.not_before < issued  # the fixture's CA backdates, as the mesh CA does
    rng = random.Random(3)
    delays = [(renew_at(svid, issued, rng, issued=issued) - issued).total_seconds()
              for _ in range(200)]
    assert min(delays) >= 54 - 1e-6 and max(delays) <= 66 + 1e-6
    assert max(delays) - min(delays) > 5  # jittered
    deadline = svid.not_after - timedelta(seconds=12)
    assert renew_at(svid, svid.not_after, rng, issued=issued) == deadline


# -- peer validation --------------------------------------------------------------------

def _chain(svid: Svid) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER)
            for c in x509.load_pem_x509_certificates(svid.chain_pem)]


def test_valid_peer_with_expected_identity_or_set(pki: Pki) -> None:
    svid = pki.svid("shop", "web")
    web = SpiffeId.parse(WEB)
    assert validate_peer_certificate(_chain(svid), pki.ca.bundle, web) == web
    assert validate_peer_certificate(_chain(svid), pki.ca.bundle, None) == web
    other = SpiffeId.parse("spiffe://example.org/ns/shop/sa/api")
    assert validate_peer_certificate(_chain(svid), pki.ca.bundle, {other, web}) == web


def test_unexpected_identity_is_rejected(pki: Pki) -> None:
    svid = pki.svid("shop", "web")
    api = SpiffeId.parse("spiffe://example.org/ns/shop/sa/api")
    with pytest.raises(PeerIdentityError, match=r"expected spiffe://example\.org/ns/shop/sa/api"):
        validate_peer_certificate(_chain(svid), pki.ca.bundle, api)
    with pytest.raises(PeerIdentityError, match="expected one of"):
        validate_peer_certificate(_chain(svid), pki.ca.bundle, {api})
    with pytest.raises(PeerIdentityError, match="expected one of: nothing"):
        validate_peer_certificate(_chain(svid), pki.ca.bundle, frozenset())


@pytest.mark.parametrize(("forge", "reason"), [
    ({"uris": [WEB, "spiffe://example.org/ns/shop/sa/admin"]}, "2 URI SANs"),
    ({"uris": [WEB, WEB]}, "2 URI SANs"),
    ({"uris": [], "dns": ["web.shop"]}, "0 URI SANs"),
    ({"uris": [WEB], "san": False}, "0 URI SANs"),
    ({"uris": [WEB], "ca": True}, "CA certificate, not a leaf"),
    ({"uris": [WEB], "key_cert_sign": True}, "keyCertSign"),
    ({"uris": ["spiffe://other.example/ns/shop/sa/web"]}, "not in trust domain 'example.org'"),
    ({"uris": ["spiffe://example.org"]}, "names a trust domain, not a workload"),
    ({"uris": ["spiffe://EXAMPLE.org/ns/shop/sa/web"]}, "not a valid SPIFFE ID"),
    ({"uris": ["spiffe://example.org/ns/shop/sa/web/"]}, "not a valid SPIFFE ID"),
    ({"uris": ["https://example.org/ns/shop/sa/web"]}, "not a valid SPIFFE ID"),
    ({"uris": [WEB], "not_after": datetime.now(UTC) - timedelta(seconds=1),
      "not_before": datetime.now(UTC) - timedelta(hours=1)}, "expired"),
    ({"uris": [WEB], "not_before": datetime.now(UTC) + timedelta(hours=1),
      "not_after": datetime.now(UTC) + timedelta(hours=2)}, "not valid yet"),
])
def test_forged_certificates_are_rejected(pki: Pki, der: Der, forge: dict[str, object],
                                          reason: str) -> None:
    cert, _ = pki.forge(**forge)  # type: ignore[arg-type]
    with pytest.raises(PeerIdentityError, match=reason):
        validate_peer_certificate([der(cert)], pki.ca.bundle, None)


def test_the_same_certificate_validates_when_well_formed(pki: Pki, der: Der) -> None:
    # Control for the forgeries above: the forging helper itself makes valid leaves.
    cert, _ = pki.forge(uris=[WEB])
    assert str(validate_peer_certificate([der(cert)], pki.ca.bundle, None)) == WEB


def test_certificate_from_another_ca_for_the_same_domain_is_rejected(
        pki: Pki, other_pki: Pki) -> None:
    with pytest.raises(PeerIdentityError, match="does not chain"):
        validate_peer_certificate(_chain(other_pki.svid("shop", "web")), pki.ca.bundle, None)


def test_certificate_from_another_trust_domain_is_rejected(pki: Pki, foreign_pki: Pki) -> None:
    with pytest.raises(PeerIdentityError, match="not in trust domain"):
        validate_peer_certificate(_chain(foreign_pki.svid("shop", "web")), pki.ca.bundle, None)


def test_expired_real_svid_is_rejected_at_a_later_time(pki: Pki) -> None:
    svid = pki.svid(ttl=timedelta(minutes=10))
    with pytest.raises(PeerIdentityError, match="expired"):
        validate_peer_certificate(_chain(svid), pki.ca.bundle, None,
                                  now=svid.not_after + timedelta(seconds=1))


def test_garbage_and_empty_chains_are_rejected(pki: Pki) -> None:
    with pytest.raises(PeerIdentityError, match="no certificate"):
        validate_peer_certificate([], pki.ca.bundle, None)
    with pytest.raises(PeerIdentityError, match="not valid DER"):
        validate_peer_certificate([b"\x30\x03junk"], pki.ca.bundle, None)


def test_a_leaf_cannot_act_as_an_issuer(pki: Pki, der: Der) -> None:
    # The classic attack: use a genuine leaf's key to sign a certificate naming someone
    # else, and send [forged, genuine leaf] as the chain.
    from cryptography.hazmat.primitives import hashes

    genuine = pki.svid("shop", "web")
    genuine_leaf = x509.load_pem_x509_certificates(genuine.chain_pem)[0]
    forged_template, _ = pki.forge(uris=["spiffe://example.org/ns/kube-system/sa/admin"])
    victim_key = new_key()
    forged = (x509.CertificateBuilder().subject_name(forged_template.subject)
              .issuer_name(genuine_leaf.subject).public_key(victim_key.public_key())
              .serial_number(1).not_valid_before(forged_template.not_valid_before_utc)
              .not_valid_after(forged_template.not_valid_after_utc))
    for ext in forged_template.extensions:
        if not isinstance(ext.value, x509.AuthorityKeyIdentifier):
            forged = forged.add_extension(ext.value, ext.critical)
    forged = forged.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
        genuine.private_key.public_key()), critical=False)
    cert = forged.sign(genuine.private_key, hashes.SHA256())
    with pytest.raises(PeerIdentityError, match="does not chain"):
        validate_peer_certificate([der(cert), der(genuine_leaf)], pki.ca.bundle, None)
