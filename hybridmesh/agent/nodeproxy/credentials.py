"""The node proxy's credential, and the CA's rule for signing on a pod's behalf.

A sidecar proves "I serve pod P" with P's bootstrap token. A node proxy serves *every* node pod
of its node, so it gets one credential per node instead — a node token (HMAC over trust domain,
node name and expiry, keyed by a secret only the CA holds) — and asks for each pod's SVID with
that token plus the pod's name. The CA then signs only if the current plan places that pod *on
that node*: a compromised node proxy can obtain the identities of the pods it already hosts,
never those of another node's pods (William Morgan's "shared key material" critique, bounded to
one node, as Istio's ztunnel does with its node-bound ServiceAccount token).

Wire format of a node sign request's ``token`` field (the sign route is unchanged)::

    hmn1.<base64url(json {td, node, exp})>.<base64url(mac)>.<base64url("ns/pod")>

The first three parts are the node token as issued (the MAC covers ``hmn1.<claims>``); the
fourth names the pod this request is for. Only the node part is secret.

The CA applies the rule in ``hybridmesh/control/identity.py`` (``IdentityAuthority``): a
token for which :func:`is_node_request` holds goes through :func:`authorize_node_request`
with the authority's :class:`NodeTokens` (``issue_node_token(node)`` mints them), any
:class:`NodeRequestRefused` becoming its ``IdentityError`` with the same status and code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from hybridmesh.control.model import PodInfo
from hybridmesh.identity.bootstrap import BootstrapClaims
from hybridmesh.identity.spiffe import InvalidSpiffeId, validate_segment, validate_trust_domain

__all__ = [
    "DEFAULT_NODE_TOKEN_TTL",
    "NODE_PLACEMENT",
    "NodeRequestRefused",
    "NodeTokens",
    "PodPlan",
    "authorize_node_request",
    "is_node_request",
    "node_request_token",
]

DEFAULT_NODE_TOKEN_TTL: Final = timedelta(hours=1)
NODE_PLACEMENT: Final = "node"
_VERSION: Final = "hmn1"
_MAX_CHARS: Final = 4096
_SECRET_BYTES: Final = 32


class NodeRequestRefused(Exception):
    """The CA must refuse this node request: HTTP status, stable code, human reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class PodPlan(Protocol):
    """What the check needs of the control plane's plan (``control.planner.Plan`` fits)."""

    def pod(self, key: str) -> PodInfo | None: ...


class NodeTokens:
    """Mints and verifies node tokens for one trust domain with one secret (held by the CA)."""

    def __init__(self, trust_domain: str, secret: bytes | None = None) -> None:
        validate_trust_domain(trust_domain)
        if secret is not None and len(secret) < _SECRET_BYTES:
            raise ValueError(f"node token secret must be at least {_SECRET_BYTES} bytes")
        self._trust_domain = trust_domain
        self._secret = secret if secret is not None else secrets.token_bytes(_SECRET_BYTES)

    def __repr__(self) -> str:
        return f"NodeTokens(trust_domain={self._trust_domain!r})"

    def issue(self, node: str, *, ttl: timedelta = DEFAULT_NODE_TOKEN_TTL,
              now: datetime | None = None) -> str:
        """The node's credential: give it to that node's proxy only (a 0400 file)."""
        validate_segment(node)
        if ttl <= timedelta(0):
            raise ValueError("node token ttl must be positive")
        expiry = int(((now or datetime.now(UTC)) + ttl).timestamp())
        claims = {"td": self._trust_domain, "node": node, "exp": expiry}
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"{_VERSION}.{body}.{_b64(self._mac(body))}"

    def verify(self, token: str, *, now: datetime | None = None) -> str:
        """The node a token (without its pod part) proves; ``NodeRequestRefused`` (401) if not."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            raise _unauthorized("not a node token")
        if not hmac.compare_digest(_unb64(parts[2]), self._mac(parts[1])):
            raise _unauthorized("node token signature does not verify (forged or other CA)")
        claims = _claims(parts[1])
        if claims["td"] != self._trust_domain:
            raise _unauthorized(f"node token is for trust domain {claims['td']!r}")
        if int(claims["exp"]) <= (now or datetime.now(UTC)).timestamp():
            raise _unauthorized("node token has expired")
        return str(claims["node"])

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._secret, f"{_VERSION}.{body}".encode(), hashlib.sha256).digest()


def node_request_token(node_token: str, pod_key: str) -> str:
    """The ``token`` field of a sign request for ``pod_key`` ("ns/name") by a node proxy."""
    return f"{node_token.strip()}.{_b64(pod_key.encode())}"


def is_node_request(token: str) -> bool:
    """Whether a sign request's token is a node request (else: a pod bootstrap token)."""
    return token.startswith(_VERSION + ".")


def authorize_node_request(tokens: NodeTokens, token: str, plan: PodPlan, *,
                           now: datetime | None = None) -> BootstrapClaims:
    """The claims to sign for, or ``NodeRequestRefused`` saying why not.

    Allowed only when the token verifies, the named pod exists in ``plan``, runs on the token's
    node and has ``placement: node`` (a sidecar pod's identity belongs to its own proxy).
    """
    if not isinstance(token, str) or len(token) > _MAX_CHARS:
        raise _unauthorized("token is not a string of sane length")
    node_part, _, pod_part = token.rpartition(".")
    node = tokens.verify(node_part, now=now)
    pod_key = _pod_key(pod_part)
    pod = plan.pod(pod_key)
    if pod is None:
        raise NodeRequestRefused(403, "pod-gone", f"pod {pod_key} is not in the mesh (deleted?)")
    if pod.node != node:
        raise NodeRequestRefused(403, "pod-on-other-node",
                                 f"pod {pod_key} runs on node {pod.node!r}, not on {node!r}: "
                                 "a node proxy gets identities of its own node's pods only")
    if pod.placement != NODE_PLACEMENT:
        raise NodeRequestRefused(403, "not-node-placement",
                                 f"pod {pod_key} has placement {pod.placement!r}; only "
                                 "'node' pods are served by the node proxy")
    return BootstrapClaims(pod.namespace, pod.service_account, pod.name)


def _pod_key(encoded: str) -> str:
    try:
        key = _unb64(encoded).decode("ascii")
    except UnicodeDecodeError:
        raise NodeRequestRefused(400, "bad-request", "pod name is not ASCII") from None
    namespace, slash, name = key.partition("/")
    try:
        if not slash:
            raise InvalidSpiffeId(key, "want namespace/name")
        validate_segment(namespace)
        validate_segment(name)
    except InvalidSpiffeId as exc:
        raise NodeRequestRefused(400, "bad-request", f"bad pod name {key[:80]!r}: "
                                 f"{exc.reason}") from None
    return key


def _claims(body: str) -> dict[str, str | int]:
    try:
        claims = json.loads(_unb64(body))
    except ValueError:
        raise _unauthorized("node token claims are not JSON") from None
    if not isinstance(claims, dict) or set(claims) != {"td", "node", "exp"} or not (
            isinstance(claims["exp"], int) and isinstance(claims["node"], str)
            and isinstance(claims["td"], str)):
        raise _unauthorized("node token claims have the wrong shape")
    return claims


def _unauthorized(reason: str) -> NodeRequestRefused:
    return NodeRequestRefused(401, "invalid-token", reason)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if "+" in text or "/" in text:
        raise _unauthorized("token is not base64url")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise _unauthorized("token is not base64url") from None
