"""AuthorizationPolicy enforcement on the inbound (destination) side of a proxy.

The proxy calls :class:`InboundAuthz` where the peer's identity is *verified* (mTLS) or known
to be absent (plaintext):

- :meth:`InboundAuthz.admit_request` — for every inbound HTTP request (HTTP/1 and HTTP/2),
  before any byte reaches the app. The path is normalized **once** here
  (``hybridmesh.policy.normalize``) and the request that goes on carries that normalized
  target, so what the policy matched is exactly what the app is asked for. A malformed or
  ambiguous path is the proxy's 400; a denial is its 403 whose body names the policy;
- :func:`authorize_connection` — when an inbound connection becomes an opaque TCP relay (L4
  rules only); a denial closes the connection.

Policies come from the pod's snapshot watch: :meth:`InboundAuthz.install` recompiles them on
every snapshot (no restart), from the JSON the control plane validated, without pydantic (a
proxy worker must stay under 30 MB). A snapshot whose policies cannot be compiled makes the
pod deny everything until a good one arrives (fail closed), and says why in the 403 body.

Which Service a request "came through" (``targetRefs`` policies) is read from the Host: a
Service that selects this pod and is named by the Host (``web``, ``web.shop``,
``web.shop.svc[.cluster.local]`` or its cluster IP), else the only selecting Service exposing
the port, else none. The client can lie about it only to pick another Service that reaches
this same pod on this same port, which it could have dialled anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.policy._scope import Target
from hybridmesh.policy.engine import (
    Decision,
    Evaluator,
    PolicyError,
    RequestAttributes,
    compile_policies,
    read_policies,
)
from hybridmesh.policy.normalize import (
    BadRequest,
    NormalizedPath,
    normalize_host,
    normalize_path,
)
from hybridmesh.proxy.authz_metrics import AuthzMetrics
from hybridmesh.proxy.errors import ProxyError, Reason
from hybridmesh.proxy.protocols.http1 import Request

if TYPE_CHECKING:
    from hybridmesh.proxy.context import ProxyContext
    from hybridmesh.proxy.discovery import Tables

__all__ = ["ALLOWED", "InboundAuthz", "PolicyDenied", "Verdict", "authorize_connection"]

log = logging.getLogger(__name__)

Verdict = tuple[bool, str]
"""(allowed, policy label): the label is ``ns/name``, ``default`` (default-deny), ``none``
(no policy decided: allowed) or ``invalid`` (the snapshot's policies could not be compiled)."""

ALLOWED: Final[Verdict] = (True, "none")
CACHE_SIZE: Final = 4096
"""Decisions remembered per snapshot: a pod sees few distinct (peer, method, path, host)
tuples, and evaluating two policies costs ~40 µs against ~1 µs for a dict hit."""
_Entry = tuple[SpiffeId | None, bytes, Verdict, str]
"""A remembered decision: (the peer it is for, target to forward, verdict, 403 detail)."""
_Key = tuple[int, int, bytes, bytes, bytes | None]
"""What a decision depends on: (id of the peer, port, method, raw target, raw Host)."""
_SVC_SUFFIXES: Final = ("", ".svc", ".svc.cluster.local")


class PolicyDenied(ProxyError):
    """The proxy's 403: ``verdict`` says which policy denied (for the access log)."""

    def __init__(self, destination: str, detail: str, verdict: Verdict) -> None:
        super().__init__(Reason.POLICY, destination, detail)
        self.verdict = verdict


def policy_label(decision: Decision) -> str:
    if decision.policy is not None:
        return decision.policy
    return "none" if decision.allowed else "default"


def denial_detail(decision: Decision) -> str:
    """The 403 body's detail: which policy (or default-deny), then the engine's reason."""
    if decision.policy is not None:
        return f"RBAC: access denied by policy {decision.policy} ({decision.reason})"
    return f"RBAC: access denied: no ALLOW policy matched ({decision.reason})"


class InboundAuthz:
    """This pod's policies, compiled per snapshot; decisions counted in :attr:`metrics`."""

    def __init__(self, metrics: AuthzMetrics | None = None) -> None:
        self.metrics = metrics or AuthzMetrics()
        self._evaluators: dict[str | None, Evaluator] = {}
        self._hosts: dict[str, str] = {}  # host name or cluster IP → "ns/name"
        self._by_port: dict[int, str | None] = {}  # targetPort → the only Service, or None
        self._broken: str | None = None
        self._decided: dict[_Key, _Entry] = {}
        # the normalized path per raw target: shared by every peer's decisions
        self._paths: dict[bytes, tuple[NormalizedPath, bytes]] = {}
        self.policies: tuple[str, ...] = ()
        self.version = -1

    # -- snapshots ---------------------------------------------------------------------------
    def install(self, tables: Tables) -> None:
        """Recompile from a new snapshot; a bad one fails closed (everything denied)."""
        snapshot = tables.snapshot
        pod: Mapping[str, Any] = snapshot.get("pod") or {}
        namespace = str(pod.get("namespace") or tables.pod.namespace)
        selecting = [s for s in snapshot.get("services") or () if _selects(s, namespace, pod)]
        keys = frozenset(f"{s['namespace']}/{s['name']}" for s in selecting)
        self._hosts = _host_names(selecting)
        self._by_port = _ports(selecting)
        trust_domain = str((snapshot.get("mesh") or {}).get("trustDomain") or "cluster.local")
        labels = {str(k): str(v) for k, v in (pod.get("labels") or {}).items()}
        try:
            views = read_policies(snapshot.get("policies") or ())
            self._evaluators = {
                via: compile_policies(views, Target(namespace, labels, keys, via),
                                      trust_domain=trust_domain)
                for via in (None, *sorted(keys))
            }
        except PolicyError as exc:
            log.error("snapshot %d: policies unusable, denying every request: %s",
                      tables.version, exc)
            self._broken, self._evaluators, self.policies = str(exc), {}, ()
        else:
            self._broken = None
            self.policies = self._evaluators[None].policies
        self.version = tables.version
        self._decided = {}

    # -- decisions ---------------------------------------------------------------------------
    def admit_request(self, peer: SpiffeId | None, port: int, request: Request,
                      destination: str) -> tuple[Request, Verdict]:
        """The request to forward (normalized target) and the verdict; raises the proxy's
        400 (bad path/host) or 403 (denied).

        Remembered per (peer, port, method, raw target, raw Host) until the next snapshot:
        everything the decision depends on, so a keep-alive connection's requests cost one
        dict hit, and a policy update applies from the next request on. The peer is keyed by
        ``id`` (its ``__hash__`` formats the URI each time) and the entry keeps the object
        itself, compared with ``is``: a recycled id can never return another peer's answer.
        """
        target, host, absolute = _origin_form(request)
        key = (id(peer), port, request.method, target, host)
        entry = self._decided.get(key)
        if entry is None or entry[0] is not peer:
            entry = self._decide(peer, key, destination)
        encoded, verdict = entry[1], entry[2]
        if encoded != request.target:
            request = replace(request, target=encoded)
        if absolute and host is not None:  # (an origin-form request has this Host already)
            request = _with_host(request, host)
        self.metrics.decision("http", verdict)
        if not verdict[0]:
            raise PolicyDenied(destination, entry[3], verdict)
        return request, verdict

    def _decide(self, peer: SpiffeId | None, key: _Key, destination: str) -> _Entry:
        """Evaluate (and remember) one request shape; a bad path or Host raises the 400 and
        is not remembered (each such request is refused afresh)."""
        _, port, method, target, host = key
        path, encoded = self._normalized(target, destination)
        evaluator = self._evaluator(host, port)
        if evaluator is None:
            entry: _Entry = (peer, encoded, (False, "invalid"), "RBAC: access denied: this "
                             f"pod's policies are invalid ({self._broken})")
        elif not evaluator.policies:
            entry = (peer, encoded, ALLOWED, "")
        else:
            try:
                normalized_host = None if host is None else normalize_host(host)
            except BadRequest as exc:
                raise ProxyError(Reason.BAD_REQUEST, destination, f"Host {exc}") from None
            decision = evaluator.decide(RequestAttributes(
                peer, port, method.decode("latin-1"), path, normalized_host))
            detail = "" if decision.allowed else denial_detail(decision)
            entry = (peer, encoded, (decision.allowed, policy_label(decision)), detail)
        if len(self._decided) >= CACHE_SIZE:
            self._decided.clear()
        self._decided[key] = entry
        return entry

    def _normalized(self, target: bytes, destination: str) -> tuple[NormalizedPath, bytes]:
        """The normalized path of an origin-form target, and its target as bytes."""
        got = self._paths.get(target)
        if got is None:
            try:
                path = normalize_path(target)
            except BadRequest as exc:
                raise ProxyError(Reason.BAD_REQUEST, destination,
                                 f"request path {exc}") from None
            if len(self._paths) >= CACHE_SIZE:
                self._paths.clear()
            got = self._paths[target] = (path, path.target.encode("ascii"))
        return got

    def check_connection(self, peer: SpiffeId | None, port: int) -> Decision | None:
        """The decision for an opaque connection (None: the policies are broken: deny)."""
        evaluator = self._evaluator(None, port)
        if evaluator is None:
            self.metrics.decision("tcp", (False, "invalid"))
            return None
        decision = evaluator.decide(RequestAttributes.tcp(peer, port))
        self.metrics.decision("tcp", (decision.allowed, policy_label(decision)))
        return decision

    def _evaluator(self, host: bytes | None, port: int) -> Evaluator | None:
        if self._broken is not None:
            return None
        via = self._via(host, port)
        return self._evaluators.get(via) or self._evaluators.get(None)

    def _via(self, host: bytes | None, port: int) -> str | None:
        if host is not None:
            name = host.decode("latin-1").lower().rpartition(":")[0] or host.decode("latin-1")
            svc = self._hosts.get(name.rstrip(".").lower())
            if svc is not None:
                return svc
        return self._by_port.get(port)

    def describe(self) -> dict[str, Any]:
        """For ``/config_dump``: what binds this pod, per Service it may be reached through."""
        return {
            "version": self.version,
            "invalid": self._broken,
            "policies": {str(via or "direct"): list(ev.policies)
                         for via, ev in self._evaluators.items()},
        }


def authorize_connection(ctx: ProxyContext, peer: SpiffeId | None, port: int) -> bool:
    """Whether an opaque inbound connection from ``peer`` to ``port`` may proceed."""
    policy = ctx.policy
    if policy is None:
        return True
    decision = policy.check_connection(peer, port)
    if decision is not None and decision.allowed:
        return True
    why = decision.reason if decision is not None else "invalid policies"
    log.debug("inbound TCP from %s to port %d denied: %s", peer or "plaintext", port, why)
    ctx.metrics.proxy_error(Reason.POLICY.value)
    return False


# -- helpers -------------------------------------------------------------------------------


def _origin_form(request: Request) -> tuple[bytes, bytes | None, bool]:
    """(origin-form target, Host, whether the target was absolute): absolute-form
    ``http://a/b`` becomes ``/b`` with Host ``a`` (RFC 9112 §3.2.2: the target's authority
    wins over the Host header)."""
    target = request.target
    if target[:1] != b"/" and target[:8].lower().startswith((b"http://", b"https://")):
        rest = target.split(b"://", 1)[1]
        authority, slash, path = rest.partition(b"/")
        return slash + path if slash else b"/", authority, True
    for name, value in request.headers:
        if name == b"host":
            return target, value, False
    return target, None, False


def _with_host(request: Request, host: bytes) -> Request:
    headers = request.headers
    if any(n == b"host" and v == host for n, v in headers):
        return request
    fields = tuple(f for f in headers if f[0] != b"host")
    return replace(request, headers=((b"host", host), *fields))


def _selects(svc: Mapping[str, Any], namespace: str, pod: Mapping[str, Any]) -> bool:
    selector = svc.get("selector") or {}
    labels = pod.get("labels") or {}
    return (svc.get("namespace") == namespace and bool(selector)
            and all(labels.get(k) == v for k, v in selector.items()))


def _host_names(services: list[Mapping[str, Any]]) -> dict[str, str]:
    names: dict[str, str] = {}
    for svc in services:
        key = f"{svc['namespace']}/{svc['name']}"
        base = f"{svc['name']}.{svc['namespace']}"
        for name in (str(svc["name"]), *(base + s for s in _SVC_SUFFIXES)):
            names.setdefault(name.lower(), key)
        if svc.get("clusterIP"):
            names.setdefault(str(svc["clusterIP"]), key)
    return names


def _ports(services: list[Mapping[str, Any]]) -> dict[int, str | None]:
    """targetPort → the Service exposing it, None when several do (ambiguous)."""
    out: dict[int, str | None] = {}
    for svc in services:
        key = f"{svc['namespace']}/{svc['name']}"
        for port in svc.get("ports") or ():
            target = int(port.get("targetPort") or port["port"])
            out[target] = key if out.get(target, key) == key else None
    return out
