"""Bootstrap tokens: the per-pod credential that proves a pod runs as a service account.

In Kubernetes a proxy proves its service account with a projected, audience-bound
ServiceAccount token that istiod verifies by TokenReview. The lab has no API server, so
the CA mints the equivalent itself: an HMAC-SHA256 over (trust domain, namespace, service
account, pod, expiry) keyed by a secret only the CA holds. The control plane derives the
identity it signs *from the verified token*, never from the CSR.

Format: ``hmb1.<base64url(json claims)>.<base64url(mac)>``; the MAC covers the version tag
and the encoded claims exactly as sent, and is compared in constant time before any
claim is decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

from hybridmesh.identity.spiffe import InvalidSpiffeId, validate_segment, validate_trust_domain

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "BootstrapClaims",
    "BootstrapTokens",
    "InvalidBootstrapToken",
]

DEFAULT_TOKEN_TTL: Final = timedelta(minutes=10)
_VERSION: Final = "hmb1"
_MAX_TOKEN_CHARS: Final = 4096
_MIN_SECRET_BYTES: Final = 32
_CLAIM_KEYS: Final = frozenset({"td", "ns", "sa", "pod", "exp"})


class InvalidBootstrapToken(ValueError):
    """A bootstrap token is malformed, forged, expired or for another trust domain."""


class BootstrapClaims(NamedTuple):
    """What a verified token proves (a tuple: ``ns, sa, pod = verify(...)`` works)."""

    namespace: str
    service_account: str
    pod: str


class BootstrapTokens:
    """Issues and verifies bootstrap tokens for one trust domain with one secret."""

    def __init__(self, trust_domain: str, secret: bytes | None = None) -> None:
        validate_trust_domain(trust_domain)
        if secret is not None and len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"bootstrap secret must be at least {_MIN_SECRET_BYTES} bytes")
        self._trust_domain = trust_domain
        self._secret = secret if secret is not None else secrets.token_bytes(_MIN_SECRET_BYTES)

    def __repr__(self) -> str:
        return f"BootstrapTokens(trust_domain={self._trust_domain!r})"

    def issue(self, namespace: str, service_account: str, pod: str, *,
              ttl: timedelta = DEFAULT_TOKEN_TTL, now: datetime | None = None) -> str:
        """Mint a token for (namespace, service_account, pod) valid for `ttl`."""
        for value in (namespace, service_account, pod):
            validate_segment(value)
        if ttl <= timedelta(0):
            raise ValueError("bootstrap token ttl must be positive")
        expiry = (now or datetime.now(UTC)) + ttl
        claims = {"td": self._trust_domain, "ns": namespace, "sa": service_account,
                  "pod": pod, "exp": int(expiry.timestamp())}
        body = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"{_VERSION}.{body}.{_b64encode(self._mac(body))}"

    def verify(self, token: str, *, now: datetime | None = None) -> BootstrapClaims:
        """Return the token's claims, or raise `InvalidBootstrapToken` saying why."""
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
            raise InvalidBootstrapToken("token is not a string of sane length")
        version, body, mac = _split(token)
        if version != _VERSION:
            raise InvalidBootstrapToken(f"unknown token version {version[:16]!r}")
        if not hmac.compare_digest(_b64decode(mac), self._mac(body)):
            raise InvalidBootstrapToken("token signature does not verify (forged or other CA)")
        claims = _decode_claims(body)
        if claims["td"] != self._trust_domain:
            raise InvalidBootstrapToken(f"token is for trust domain {claims['td']!r}")
        if int(claims["exp"]) <= (now or datetime.now(UTC)).timestamp():
            raise InvalidBootstrapToken("token has expired")
        return BootstrapClaims(str(claims["ns"]), str(claims["sa"]), str(claims["pod"]))

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._secret, f"{_VERSION}.{body}".encode(), hashlib.sha256).digest()


def _split(token: str) -> tuple[str, str, str]:
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidBootstrapToken("token must have three '.'-separated parts")
    return parts[0], parts[1], parts[2]


def _decode_claims(body: str) -> dict[str, str | int]:
    """Decode claims that already passed the MAC; still check shape (defence in depth)."""
    try:
        claims = json.loads(_b64decode(body))
    except ValueError:
        raise InvalidBootstrapToken("token claims are not JSON") from None
    if not isinstance(claims, dict) or set(claims) != _CLAIM_KEYS:
        raise InvalidBootstrapToken("token claims have the wrong fields")
    if not isinstance(claims["exp"], int) or not all(
            isinstance(claims[k], str) for k in ("td", "ns", "sa", "pod")):
        raise InvalidBootstrapToken("token claims have the wrong types")
    try:
        for key in ("ns", "sa", "pod"):
            validate_segment(claims[key])
    except InvalidSpiffeId as exc:
        raise InvalidBootstrapToken(f"token claim is invalid: {exc.reason}") from None
    return claims


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if "+" in text or "/" in text:  # b64decode would accept them next to the altchars
        raise InvalidBootstrapToken("token is not base64url")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBootstrapToken("token is not base64url") from None
