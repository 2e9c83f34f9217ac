"""Bootstrap tokens: HMAC-bound, expiring, per trust domain, tamper-evident."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from hybridmesh.identity.bootstrap import BootstrapTokens, InvalidBootstrapToken
from hybridmesh.identity.ca import MeshCA
from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId

SECRET = b"s" * 32


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.create_root("example.org", bootstrap_secret=SECRET)


def test_round_trip_gives_the_claims_and_identity(ca: MeshCA) -> None:
    token = ca.issue_bootstrap_token("shop", "web", "web-0")
    ns, sa, pod = ca.verify_bootstrap_token(token)
    assert (ns, sa, pod) == ("shop", "web", "web-0")
    claims = ca.verify_bootstrap_token(token)
    assert ca.identity_for(claims) == SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")


def test_expiry_is_enforced(ca: MeshCA) -> None:
    now = datetime.now(UTC)
    token = ca.issue_bootstrap_token("shop", "web", "web-0", ttl=timedelta(minutes=5), now=now)
    assert ca.verify_bootstrap_token(token, now=now + timedelta(minutes=4)).pod == "web-0"
    with pytest.raises(InvalidBootstrapToken, match="expired"):
        ca.verify_bootstrap_token(token, now=now + timedelta(minutes=5))


def _reencode(token: str, **changes: object) -> str:
    version, body, mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    new_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{version}.{new_body}.{mac}"


@pytest.mark.parametrize("changes", [{"sa": "admin"}, {"ns": "kube-system"},
                                     {"exp": 2**40}, {"pod": "other-0"}])
def test_tampered_claims_fail_the_mac(ca: MeshCA, changes: dict[str, object]) -> None:
    token = _reencode(ca.issue_bootstrap_token("shop", "web", "web-0"), **changes)
    with pytest.raises(InvalidBootstrapToken, match="signature does not verify"):
        ca.verify_bootstrap_token(token)


def test_a_token_from_another_ca_is_refused(ca: MeshCA) -> None:
    other = MeshCA.create_root("example.org")  # same domain, different secret
    with pytest.raises(InvalidBootstrapToken, match="signature does not verify"):
        ca.verify_bootstrap_token(other.issue_bootstrap_token("shop", "web", "web-0"))


def test_a_token_for_another_trust_domain_is_refused() -> None:
    token = BootstrapTokens("other.org", SECRET).issue("shop", "web", "web-0")
    with pytest.raises(InvalidBootstrapToken, match=r"trust domain 'other\.org'"):
        BootstrapTokens("example.org", SECRET).verify(token)


@pytest.mark.parametrize(("token", "reason"), [
    ("", "three '.'-separated parts"),
    ("a.b", "three '.'-separated parts"),
    ("a.b.c.d", "three '.'-separated parts"),
    ("hmb2.e30.AAAA", "unknown token version"),
    ("hmb1.e30.!!!!", "not base64url"),
    ("hmb1.e30.ab+/", "not base64url"),
    ("hmb1.e30.AAAA", "signature does not verify"),
    ("x" * 5000, "sane length"),
])
def test_malformed_tokens_are_refused(ca: MeshCA, token: str, reason: str) -> None:
    with pytest.raises(InvalidBootstrapToken, match=reason):
        ca.verify_bootstrap_token(token)


def test_non_string_token_is_refused(ca: MeshCA) -> None:
    with pytest.raises(InvalidBootstrapToken):
        ca.verify_bootstrap_token(b"hmb1.a.b")  # type: ignore[arg-type]


def test_junk_appended_to_the_mac_is_refused(ca: MeshCA) -> None:
    token = ca.issue_bootstrap_token("shop", "web", "web-0")
    with pytest.raises(InvalidBootstrapToken):
        ca.verify_bootstrap_token(token + "!")


def test_issue_validates_its_inputs(ca: MeshCA) -> None:
    with pytest.raises(InvalidSpiffeId, match="forbidden character"):
        ca.issue_bootstrap_token("shop/sa/admin", "web", "web-0")
    with pytest.raises(InvalidSpiffeId, match="dot segment"):
        ca.issue_bootstrap_token("..", "web", "web-0")
    with pytest.raises(ValueError, match="positive"):
        ca.issue_bootstrap_token("shop", "web", "web-0", ttl=timedelta(0))
    with pytest.raises(ValueError, match="at least 32 bytes"):
        BootstrapTokens("example.org", b"short")


def test_repr_does_not_show_the_secret() -> None:
    tokens = BootstrapTokens("example.org", SECRET)
    assert "sss" not in repr(tokens)
