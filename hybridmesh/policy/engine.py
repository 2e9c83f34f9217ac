"""AuthorizationPolicy evaluation for one destination: compile once, ``decide`` per request.

Order (Istio's): any DENY policy that matches denies; then, if any ALLOW policy binds the
destination, the request is allowed only if an ALLOW rule matches ("default-deny once an ALLOW
exists"); with no ALLOW policy it is allowed.

Fail-closed rule for everything a request cannot prove (see ``_match``): a DENY rule fires when
it *may* match, an ALLOW rule grants only when it *surely* matches. Consequences, all tested:

- TCP connections have no method, path or host. An ALLOW rule that needs them never matches;
  a DENY rule ignores them (matches on its other fields) — Istio's documented TCP semantics.
- Plaintext peers have no identity: ``principals: ["*"]`` (any authenticated peer) is surely
  false for them, so ``notPrincipals: ["*"]`` denies plaintext; every other source field is
  unknown, so a DENY naming principals/namespaces/service accounts also denies plaintext
  (stricter than Istio, where a plaintext peer skips such DENY rules).
- Namespaces and service accounts are read only from an ID in the mesh's trust domain. A peer
  from another trust domain matches only principal patterns that spell its trust domain
  (never ``*``, ``*suffix`` or a namespace), and DENY rules treat it as possibly anyone.
- Paths are compared case-sensitively against the normalized path (``/ADMIN`` is not
  ``/admin``, and is forwarded as ``/ADMIN``), but a match that holds only ignoring case, a
  trailing ``/`` or ``.``, ``;params`` or percent-encoding is a *maybe*: a DENY on ``/admin``
  therefore also denies ``/ADMIN``, ``/admin/``, ``/admin;x`` and ``/admin%20``.

``decide`` never raises: every value was validated and compiled by :func:`compile_policies`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId, validate_trust_domain
from hybridmesh.policy._match import Facts, Tri
from hybridmesh.policy._rules import CompiledRule, compile_rule, explain, policy_name
from hybridmesh.policy._scope import ROOT_NAMESPACE, Binding, Target, binding
from hybridmesh.policy._view import PolicyView, ViewError, parse_policy
from hybridmesh.policy.normalize import NormalizedPath, normalize_host, normalize_path

if TYPE_CHECKING:  # pydantic (~13 MB RSS) is imported only by load_policies, never by a proxy
    from hybridmesh.resources.models import AuthorizationPolicy

__all__ = [
    "Action",
    "Decision",
    "Evaluator",
    "PolicyError",
    "RequestAttributes",
    "compile_policies",
    "load_policies",
    "read_policies",
]

Action = Literal["ALLOW", "DENY"]
PolicyInput: TypeAlias = "Mapping[str, Any] | AuthorizationPolicy"


class PolicyError(ValueError):
    """A policy (from a snapshot) is invalid or cannot be compiled; the message says which."""


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What a policy can see of a request. Build it with :meth:`tcp` or :meth:`http`.

    ``principal`` is the peer's verified SPIFFE ID (None: plaintext). For HTTP, ``path`` is
    normalized (the proxy forwards ``path.target``) and ``host`` is normalized or None.
    """

    principal: SpiffeId | None
    port: int
    method: str | None = None
    path: NormalizedPath | None = None
    host: str | None = None

    @classmethod
    def tcp(cls, principal: SpiffeId | None, port: int) -> RequestAttributes:
        return cls(principal, port)

    @classmethod
    def http(
        cls,
        principal: SpiffeId | None,
        port: int,
        method: str,
        target: str | bytes | NormalizedPath,
        host: str | bytes | None = None,
    ) -> RequestAttributes:
        """Normalize ``target`` and ``host``; raises ``BadRequest`` (answer 400) if invalid."""
        path = target if isinstance(target, NormalizedPath) else normalize_path(target)
        return cls(principal, port, method, path, None if host is None else normalize_host(host))

    @property
    def is_http(self) -> bool:
        return self.path is not None

    @property
    def source_namespace(self) -> str | None:
        return self.principal.namespace if self.principal else None

    @property
    def source_service_account(self) -> str | None:
        return self.principal.service_account if self.principal else None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: str | None  # "ns/name" of the deciding policy; None: no policy, or default-deny
    action: Action | None  # the deciding policy's action
    reason: str
    rule: int | None = None  # index of the deciding rule in its policy

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "policy": self.policy,
            "action": self.action,
            "rule": self.rule,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class _Compiled:
    name: str
    action: Action
    rules: tuple[CompiledRule, ...]
    grants: bool  # False: an ALLOW bound through a Service the request did not come through


def load_policies(policies: Iterable[PolicyInput]) -> tuple[AuthorizationPolicy, ...]:
    """Validate snapshot JSON (or pass models through); PolicyError names the bad one."""
    from pydantic import ValidationError

    from hybridmesh.resources.models import AuthorizationPolicy

    loaded = []
    for index, raw in enumerate(policies):
        if isinstance(raw, AuthorizationPolicy):
            loaded.append(raw)
            continue
        try:
            loaded.append(AuthorizationPolicy.model_validate(raw))
        except ValidationError as exc:
            raise PolicyError(f"policies[{index}] ({_raw_name(raw)}) is invalid: {exc}") from None
    return tuple(sorted(loaded, key=policy_name))


def read_policies(policies: Iterable[object]) -> tuple[PolicyView, ...]:
    """Read snapshot JSON the control plane already validated, without pydantic (the proxy's
    path: see ``_view``); PolicyError names the policy whose shape is wrong."""
    views = []
    for index, raw in enumerate(policies):
        try:
            views.append(parse_policy(raw))
        except ViewError as exc:
            name = _raw_name(raw) if isinstance(raw, Mapping) else "unnamed"
            raise PolicyError(f"policies[{index}] ({name}) is invalid: {exc}") from None
    return tuple(sorted(views, key=policy_name))


def _raw_name(raw: Mapping[str, Any]) -> str:
    meta = raw.get("metadata") if isinstance(raw, Mapping) else None
    if isinstance(meta, Mapping):
        return f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"
    return "unnamed"


def compile_policies(
    policies: Iterable[PolicyInput] | tuple[PolicyView, ...],
    target: Target,
    *,
    trust_domain: str,
    root_namespace: str = ROOT_NAMESPACE,
) -> Evaluator:
    """Select the policies that bind ``target`` and compile them; PolicyError if invalid."""
    try:
        validate_trust_domain(trust_domain)
    except InvalidSpiffeId as exc:
        raise PolicyError(f"mesh trust domain: {exc.reason}") from None
    compiled = []
    given = tuple(policies)
    views = all(isinstance(p, PolicyView) for p in given)
    loaded: tuple[AuthorizationPolicy | PolicyView, ...] = (
        given if views else load_policies(given)  # type: ignore[assignment, arg-type]
    )
    for policy in loaded:
        bound = binding(policy, target, root_namespace)
        if bound is not Binding.NONE:
            compiled.append(_compile(policy, grants=bound is Binding.APPLIES))
    return Evaluator(trust_domain, tuple(compiled))


def _compile(policy: AuthorizationPolicy | PolicyView, *, grants: bool) -> _Compiled:
    name = policy_name(policy)
    try:
        rules = tuple(compile_rule(rule) for rule in policy.spec.rules)
    except ValueError as exc:
        raise PolicyError(f"AuthorizationPolicy {name}: {exc}") from None
    return _Compiled(name, policy.spec.action, rules, grants)


class Evaluator:
    """The policies bound to one destination, compiled; :meth:`decide` is pure and total."""

    def __init__(self, trust_domain: str, policies: tuple[_Compiled, ...]) -> None:
        self.trust_domain = trust_domain
        self._deny = tuple(p for p in policies if p.action == "DENY")
        self._allow = tuple(p for p in policies if p.action == "ALLOW")

    @property
    def policies(self) -> tuple[str, ...]:
        """Names of the policies that bind the destination, DENY first."""
        return tuple(p.name for p in (*self._deny, *self._allow))

    def decide(self, request: RequestAttributes) -> Decision:
        facts = self._facts(request)
        for policy in self._deny:
            for index, rule in enumerate(policy.rules):
                verdict = rule(facts)
                if verdict is not Tri.NO:
                    return _deny_decision(policy, index, rule, verdict, facts)
        if not self._allow:
            what = "no DENY policy matches and no ALLOW policy" if self._deny else "no policy"
            return Decision(True, None, None, f"{what} applies to the workload")
        return self._allow_decision(facts)

    def _allow_decision(self, facts: Facts) -> Decision:
        maybe: str | None = None
        for policy in (p for p in self._allow if p.grants):
            for index, rule in enumerate(policy.rules):
                verdict = rule(facts)
                if verdict is Tri.YES:
                    return Decision(
                        True,
                        policy.name,
                        "ALLOW",
                        f"ALLOW {policy.name} rule {index} matches",
                        index,
                    )
                if verdict is Tri.MAYBE and maybe is None:
                    why = explain(rule.uncertain_fields(facts), facts)
                    maybe = f"; {policy.name} rule {index} only may match ({why})"
        names = ", ".join(
            p.name + ("" if p.grants else " (via another Service)") for p in self._allow
        )
        reason = f"default-deny: no rule of the ALLOW policies {names} matches{maybe or ''}"
        return Decision(False, None, None, reason)

    def _facts(self, request: RequestAttributes) -> Facts:
        peer = request.principal
        proven = peer is not None and peer.trust_domain == self.trust_domain
        namespace = peer.namespace if peer is not None and proven else None
        account = peer.service_account if peer is not None and proven else None
        return Facts(
            peer=peer,
            proven=proven,
            namespace=namespace,
            service_account=f"{namespace}/{account}" if namespace and account else None,
            port=str(request.port),
            http=request.is_http,
            method=request.method,
            path=request.path,
            host=request.host,
        )


def _deny_decision(
    policy: _Compiled, index: int, rule: CompiledRule, verdict: Tri, facts: Facts
) -> Decision:
    if verdict is Tri.YES:
        reason = f"DENY {policy.name} rule {index} matches"
    else:
        why = explain(rule.uncertain_fields(facts), facts)
        reason = f"DENY {policy.name} rule {index} may match, so it denies (fail-closed): {why}"
    return Decision(False, policy.name, "DENY", reason, index)
