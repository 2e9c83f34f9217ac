"""Bad input gets a typed error, never a traceback: peer chains and bootstrap tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridmesh.identity.bootstrap import BootstrapTokens, InvalidBootstrapToken
from hybridmesh.identity.bundle import InvalidBundle, TrustBundle
from hybridmesh.identity.workload import PeerIdentityError, validate_peer_certificate

if TYPE_CHECKING:
    from conftest import Pki

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def leaf_der(pki: Pki) -> bytes:
    svid = pki.svid("shop", "web")
    return x509.load_pem_x509_certificates(svid.chain_pem)[0].public_bytes(
        serialization.Encoding.DER)


@pytest.mark.filterwarnings("ignore:Parsed a serial number")  # mutated serials; rejected
@FUZZ
@given(data=st.data())
def test_mutated_leaves_raise_only_peer_identity_error(pki: Pki, leaf_der: bytes,
                                                       data: st.DataObject) -> None:
    der = bytearray(leaf_der)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(der) - 1))
        der[index] = data.draw(st.integers(0, 255))
    try:
        identity = validate_peer_certificate([bytes(der)], pki.ca.bundle, None)
    except PeerIdentityError:
        return
    # A mutation that still verifies can only have touched unsigned bytes: same identity.
    assert str(identity) == "spiffe://example.org/ns/shop/sa/web"


@FUZZ
@given(chain=st.lists(st.binary(max_size=64), max_size=3))
def test_random_bytes_raise_only_peer_identity_error(pki: Pki, chain: list[bytes]) -> None:
    with pytest.raises(PeerIdentityError):
        validate_peer_certificate(chain, pki.ca.bundle, None)


@settings(max_examples=300)
@given(token=st.text(max_size=200))
def test_random_tokens_raise_only_invalid_bootstrap_token(token: str) -> None:
    with pytest.raises(InvalidBootstrapToken):
        BootstrapTokens("example.org", b"k" * 32).verify(token)


def test_bundle_rejects_garbage_and_leaves(pki: Pki) -> None:
    with pytest.raises(InvalidBundle, match=r"not PEM|no certificates"):
        TrustBundle("example.org", b"garbage")
    leaf_pem = pki.svid().chain_pem
    with pytest.raises(InvalidBundle, match="not a CA certificate"):
        TrustBundle("example.org", leaf_pem)
    assert TrustBundle("example.org", pki.root_pem).certificates == (pki.root,)
