"""The control plane's certificate authority: a bootstrap token and a CSR in, an X509-SVID out.

Secure naming starts here. A proxy proves *which pod it serves* with the bootstrap token the
lab handed it (``identity/bootstrap.py``: HMAC over trust domain, namespace, service account,
pod) — or, for a node proxy, with its node token naming one of its node's ``placement: node``
pods (``agent/nodeproxy/credentials.py``: the CA signs only for pods the plan puts on that
node); the authority then checks that the pod still exists in the current plan *with that
service account* and signs exactly ``spiffe://<td>/ns/<ns>/sa/<sa>``. The CSR only proves
possession of the key: the identity comes from the verified token and the plan, never from
what the CSR asks for (the CA refuses a CSR naming anything else).

Routes (on the proxies' control socket and on the lab API socket)::

    POST /v1/identity/sign    {"token": "...", "csr": "-----BEGIN CERTIFICATE REQUEST..."}
        200 {"identity", "certificateChain", "trustBundle", "notBefore", "notAfter", "serial"}
        4xx/5xx {"error": <code>, "message": <why>}
    GET  /v1/identity/bundle  200 the trust bundle (PEM)

The CA's key lives only in this process's memory (the lab daemon); it is never written out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509

from hybridmesh._http.message import Request, Response
from hybridmesh._http.router import Router
from hybridmesh.agent.nodeproxy.credentials import (
    NodeRequestRefused,
    NodeTokens,
    authorize_node_request,
    is_node_request,
)
from hybridmesh.control.model import PodInfo
from hybridmesh.control.plane import ControlPlane
from hybridmesh.identity.bootstrap import BootstrapClaims, InvalidBootstrapToken
from hybridmesh.identity.ca import DEFAULT_CA_TTL, CaError, CsrRejected, MeshCA

__all__ = [
    "DEFAULT_POD_TOKEN_TTL",
    "IdentityAuthority",
    "IdentityError",
    "SignedSvid",
    "load_ca",
    "register_identity_routes",
]

log = logging.getLogger(__name__)

DEFAULT_POD_TOKEN_TTL: Final = timedelta(hours=1)
"""Like a Kubernetes projected service-account token: short-lived, refreshed by the lab."""
MAX_CSR_BYTES: Final = 16 * 1024
MAX_TOKEN_CHARS: Final = 4096


class IdentityError(Exception):
    """A refused identity request: HTTP status, stable error code and a human reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_response(self) -> Response:
        return Response.json({"error": self.code, "message": self.message}, self.status)


@dataclass(frozen=True, slots=True)
class SignedSvid:
    """What the sign route answers (public material only)."""

    identity: str
    chain_pem: bytes
    bundle_pem: bytes
    not_before: datetime
    not_after: datetime
    serial: int

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "certificateChain": self.chain_pem.decode("ascii"),
            "trustBundle": self.bundle_pem.decode("ascii"),
            "notBefore": self.not_before.isoformat(),
            "notAfter": self.not_after.isoformat(),
            "serial": f"{self.serial:x}",
        }


class IdentityAuthority:
    """The mesh CA bound to the control plane's current plan (pods and service accounts)."""

    def __init__(self, ca: MeshCA, control: ControlPlane, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._ca = ca
        self._control = control
        self._clock = clock
        self._node_tokens = NodeTokens(ca.trust_domain)
        self.issued = 0
        self.refused = 0

    @property
    def trust_domain(self) -> str:
        return self._ca.trust_domain

    @property
    def bundle_pem(self) -> bytes:
        return self._ca.bundle_pem

    def issue_token(self, pod: PodInfo, *, ttl: timedelta = DEFAULT_POD_TOKEN_TTL) -> str:
        """The pod's bootstrap credential (hand it to the pod's proxy only)."""
        return self._ca.issue_bootstrap_token(pod.namespace, pod.service_account, pod.name,
                                              ttl=ttl, now=self._clock())

    def issue_node_token(self, node: str) -> str:
        """A node proxy's credential (hand it to that node's proxy only): with it the proxy
        may obtain the SVIDs of the ``placement: node`` pods the plan puts on that node."""
        return self._node_tokens.issue(node, now=self._clock())

    def sign(self, token: str, csr_pem: bytes) -> SignedSvid:
        """Verify the token against the CA and the plan, then sign; `IdentityError` if not."""
        try:
            signed = self._sign(token, csr_pem)
        except IdentityError as exc:
            self.refused += 1
            log.info("identity request refused (%s): %s", exc.code, exc.message)
            raise
        self.issued += 1
        return signed

    def _sign(self, token: str, csr_pem: bytes) -> SignedSvid:
        self._check_trust_domain()
        now = self._clock()
        claims = self._claims(token, now)
        key = f"{claims.namespace}/{claims.pod}"
        pod = self._control.plan.pod(key)
        if pod is None:
            raise IdentityError(403, "pod-gone", f"pod {key} is not in the mesh (deleted?)")
        if pod.service_account != claims.service_account:
            raise IdentityError(403, "service-account-changed",
                                f"pod {key} now runs as service account "
                                f"{pod.service_account!r}, the token names "
                                f"{claims.service_account!r}")
        identity = self._ca.identity_for(claims)
        ttl = self._control.topology.mesh.spec.certificate_ttl
        try:
            chain = self._ca.sign(csr_pem, identity, ttl, now=now)
        except CsrRejected as exc:
            raise IdentityError(400, "csr-rejected", str(exc)) from None
        except CaError as exc:
            raise IdentityError(503, "ca-unavailable", str(exc)) from None
        leaf = x509.load_pem_x509_certificate(chain)
        return SignedSvid(str(identity), chain, self._ca.bundle_pem, leaf.not_valid_before_utc,
                          leaf.not_valid_after_utc, leaf.serial_number)

    def _claims(self, token: str, now: datetime) -> BootstrapClaims:
        """Who the request is for: a pod's own bootstrap token, or a node proxy's node token
        naming a pod — accepted only for a ``placement: node`` pod on that very node
        (``agent/nodeproxy/credentials.py``; docs/node.md §1). The checks that follow (pod
        gone, service account changed) apply to both."""
        try:
            if is_node_request(token):
                return authorize_node_request(self._node_tokens, token, self._control.plan,
                                              now=now)
            return self._ca.verify_bootstrap_token(token, now=now)
        except InvalidBootstrapToken as exc:
            raise IdentityError(401, "invalid-token", str(exc)) from None
        except NodeRequestRefused as exc:
            raise IdentityError(exc.status, exc.code, exc.message) from None

    def _check_trust_domain(self) -> None:
        wanted = self._control.topology.mesh.spec.trust_domain
        if wanted != self._ca.trust_domain:
            raise IdentityError(409, "trust-domain-changed",
                                f"MeshConfig trustDomain is now {wanted!r} but this CA issues "
                                f"for {self._ca.trust_domain!r}; recreate the lab "
                                "(`hybridmesh lab down` then `lab up`) to change it")

    def describe(self) -> dict[str, Any]:
        """Public facts for status output."""
        cert = self._ca.certificate
        return {"trustDomain": self._ca.trust_domain,
                "caSubject": cert.subject.rfc4514_string(),
                "caNotAfter": self._ca.not_after.isoformat(),
                "issued": self.issued, "refused": self.refused}


def load_ca(trust_domain: str, *, root_cert: Path | None = None, root_key: Path | None = None,
            ttl: timedelta | None = None) -> MeshCA:
    """A fresh self-signed root, or an intermediate under the user's root when both paths are
    given (then the user's root alone is the trust bundle). Raises `CaError` with the reason."""
    if (root_cert is None) != (root_key is None):
        raise CaError("give both the root certificate and its key, or neither")
    ttl = DEFAULT_CA_TTL if ttl is None else ttl
    if root_cert is None or root_key is None:
        return MeshCA.create_root(trust_domain, ttl=ttl)
    try:
        cert_pem, key_pem = root_cert.read_bytes(), root_key.read_bytes()
    except OSError as exc:
        raise CaError(f"cannot read the CA root: {exc}") from None
    return MeshCA.create_intermediate(trust_domain, cert_pem, key_pem, ttl=ttl)


def register_identity_routes(router: Router, authority: IdentityAuthority) -> None:
    """``POST /v1/identity/sign`` and ``GET /v1/identity/bundle``."""

    async def sign(req: Request, _p: dict[str, str]) -> Response:
        try:
            token, csr = _sign_request(req)
            return Response.json(authority.sign(token, csr).to_json())
        except IdentityError as exc:
            return exc.to_response()

    async def bundle(_req: Request, _p: dict[str, str]) -> Response:
        return Response(200, {"Content-Type": "application/x-pem-file"}, authority.bundle_pem)

    router.add("POST", "/v1/identity/sign", sign)
    router.add("GET", "/v1/identity/bundle", bundle)


def _sign_request(req: Request) -> tuple[str, bytes]:
    """The (token, CSR PEM) of a sign request, or a 400 saying what is wrong with it."""
    if len(req.body) > MAX_CSR_BYTES + MAX_TOKEN_CHARS + 1024:
        raise IdentityError(413, "too-large", "sign request body is too large")
    try:
        body = json.loads(req.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise IdentityError(400, "bad-request", "body must be JSON") from None
    if not isinstance(body, dict):
        raise IdentityError(400, "bad-request", 'body must be {"token": ..., "csr": PEM}')
    token, csr = body.get("token"), body.get("csr")
    if not isinstance(token, str) or not token:
        raise IdentityError(400, "bad-request", '"token" must be a non-empty string')
    if not isinstance(csr, str) or not csr:
        raise IdentityError(400, "bad-request", '"csr" must be a PEM string')
    if len(token) > MAX_TOKEN_CHARS or len(csr) > MAX_CSR_BYTES:
        raise IdentityError(413, "too-large", "token or CSR is too large")
    try:
        return token, csr.encode("ascii")
    except UnicodeEncodeError:
        raise IdentityError(400, "bad-request", '"csr" must be ASCII PEM') from None
