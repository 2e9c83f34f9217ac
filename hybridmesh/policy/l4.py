"""The L4 projection of policies: what an enforcer without L7 (eBPF maps) can apply.

It keeps principals, namespaces, service accounts and ports and applies the engine's TCP
semantics to the rest, so an enforcer that evaluates the projection with the engine's source
semantics (plaintext and foreign trust domains are "maybe", see ``engine``) decides every
connection exactly as :class:`~hybridmesh.policy.engine.Evaluator` does (property-tested):

- a DENY operation loses its HTTP-only fields (it then denies more: ``widened``); an operation
  left with nothing matches any port, which makes the rule's ``to`` match anything;
- an ALLOW operation that needs an HTTP-only field is dropped, and a rule left without
  operations can never match, so it is dropped too;
- an ALLOW policy left without rules still binds its targets (default-deny): it yields one
  ``never_matches`` marker so the loader keeps the target closed.

This is for destinations enforced only at L4 (``kernel`` placement). A destination with a
proxy evaluates the full policies, or a widened DENY would deny requests L7 would allow. A
``targetRefs`` ALLOW grants only to connections known to come through its Service (``Target.via``);
an enforcer that cannot tell should pass ``via=None`` and accept that such an ALLOW then only
closes the workload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hybridmesh.policy._rules import http_fields, policy_name
from hybridmesh.policy.engine import Action, PolicyInput, load_policies

if TYPE_CHECKING:  # pydantic models: imported at run time only where one is built (proxy RSS)
    from hybridmesh.resources.models import AuthorizationPolicy, Operation, Rule, Source

__all__ = ["L4Ports", "L4Rule", "L4Source", "l4_policy", "l4_rules"]


@dataclass(frozen=True, slots=True)
class L4Source:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class L4Ports:
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class L4Rule:
    """One rule at L4. Matches when any source AND any ports entry match (empty: any)."""

    policy: str  # "ns/name"
    action: Action
    namespace: str
    selector: Mapping[str, str] | None  # None: the namespace (or targetRefs)
    target_refs: tuple[str, ...]  # Service names in ``namespace``
    rule: int | None  # index in the policy; None for a never_matches marker
    sources: tuple[L4Source, ...] = ()
    ports: tuple[L4Ports, ...] = ()
    widened: bool = False  # DENY only: HTTP-only conditions were dropped
    never_matches: bool = field(default=False)


def l4_policy(policy: AuthorizationPolicy) -> AuthorizationPolicy:
    """``policy`` with its rules projected to L4 (same TCP decisions, no HTTP fields)."""
    deny = policy.spec.action == "DENY"
    rules = [
        projected
        for rule in policy.spec.rules
        if (projected := _project_rule(rule, deny=deny)) is not None
    ]
    spec = policy.spec.model_copy(update={"rules": rules})
    return policy.model_copy(update={"spec": spec})


def _project_rule(rule: Rule, *, deny: bool) -> Rule | None:
    if not rule.to:
        return rule
    kept = []
    for item in rule.to:
        if not http_fields(item.operation):
            kept.append(item)
        elif deny:
            ports = _ports_only(item.operation)
            if ports is None:
                return rule.model_copy(update={"to": []})  # an any-port operation
            kept.append(item.model_copy(update={"operation": ports}))
    if not kept:
        return None  # ALLOW: every operation needs L7, the rule can never match a connection
    return rule.model_copy(update={"to": kept})


def _ports_only(operation: Operation) -> Operation | None:
    if not operation.ports and not operation.not_ports:
        return None
    from hybridmesh.resources.models import Operation

    return Operation(ports=operation.ports, not_ports=operation.not_ports)


def l4_rules(policies: Iterable[PolicyInput]) -> list[L4Rule]:
    """Every policy's rules projected to L4, in policy-name order; PolicyError if invalid."""
    out: list[L4Rule] = []
    for policy in load_policies(policies):
        out.extend(_rules_of(policy))
    return out


def _rules_of(policy: AuthorizationPolicy) -> list[L4Rule]:
    deny = policy.spec.action == "DENY"
    spec = policy.spec
    base: dict[str, Any] = {
        "policy": policy_name(policy),
        "action": spec.action,
        "namespace": policy.metadata.namespace,
        "selector": dict(spec.selector.match_labels) if spec.selector else None,
        "target_refs": tuple(ref.name for ref in spec.target_refs),
    }
    rules = []
    for index, rule in enumerate(spec.rules):
        projected = _project_rule(rule, deny=deny)
        if projected is not None:
            rules.append(_l4_rule(base, index, projected, widened=deny and projected != rule))
    if not deny and not rules:
        rules.append(L4Rule(**base, rule=None, never_matches=True))
    return rules


def _l4_rule(base: dict[str, Any], index: int, rule: Rule, *, widened: bool) -> L4Rule:
    return L4Rule(
        **base,
        rule=index,
        sources=tuple(_source(item.source) for item in rule.from_),
        ports=tuple(_ports(item.operation) for item in rule.to),
        widened=widened,
    )


def _ports(operation: Operation) -> L4Ports:
    return L4Ports(tuple(operation.ports), tuple(operation.not_ports))


def _source(source: Source) -> L4Source:
    return L4Source(
        principals=tuple(source.principals),
        not_principals=tuple(source.not_principals),
        namespaces=tuple(source.namespaces),
        not_namespaces=tuple(source.not_namespaces),
        service_accounts=tuple(source.service_accounts),
        not_service_accounts=tuple(source.not_service_accounts),
    )
