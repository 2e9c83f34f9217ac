"""Policy rules compiled into three-valued predicates over :class:`Facts`.

Istio's shape: a rule matches when any ``from`` source AND any ``to`` operation match (an
empty list matches anything); a source or operation matches when every field it sets matches;
a field matches when any of its values does (``notX``: when none does). A policy with no rules
matches nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final

from hybridmesh.identity.spiffe import InvalidPrincipalPattern, SpiffeId
from hybridmesh.policy._match import (
    Facts,
    HostPattern,
    MethodPattern,
    PathPattern,
    Pattern,
    Tri,
    all_of,
    any_of,
    namespace_match,
    port_match,
    principal_match,
    service_account_match,
)

if TYPE_CHECKING:
    from hybridmesh.policy._view import ClauseView, PolicyView, RuleView
    from hybridmesh.resources.models import AuthorizationPolicy, Operation, Rule, Source

__all__ = [
    "HTTP_FIELDS",
    "CompiledRule",
    "Condition",
    "compile_rule",
    "explain",
    "http_fields",
    "policy_name",
]

Matcher = Callable[[Facts], Tri]
Builder = Callable[[str], Matcher]

HTTP_FIELDS: Final = frozenset({"hosts", "methods", "paths"})
"""Operation fields a TCP connection cannot be matched on (plus their ``not`` forms)."""

_PROBE: Final = SpiffeId("probe.invalid", "")


def _principal(value: str) -> Matcher:
    try:
        _PROBE.matches(value)
    except InvalidPrincipalPattern as exc:
        raise ValueError(str(exc)) from None
    return partial(principal_match, value)


_BUILDERS: Final[dict[str, Builder]] = {
    "principals": _principal,
    "namespaces": lambda value: partial(namespace_match, Pattern.parse(value)),
    "serviceAccounts": lambda value: partial(service_account_match, value),
    "ports": lambda value: partial(port_match, value),
    "methods": lambda value: MethodPattern(Pattern.parse(value)),
    "paths": PathPattern.parse,
    "hosts": HostPattern.parse,
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One field of a source or operation: any value matches (``notX``: none does)."""

    field: str  # the YAML name: "principals", "notPaths", ...
    negated: bool
    matchers: tuple[Matcher, ...]

    def __call__(self, facts: Facts) -> Tri:
        hit = any_of(matcher(facts) for matcher in self.matchers)
        return hit.negate() if self.negated else hit


Clause = tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    sources: tuple[Clause, ...]
    operations: tuple[Clause, ...]

    def __call__(self, facts: Facts) -> Tri:
        source = _any_clause(self.sources, facts)
        if source is Tri.NO:
            return source
        return min(source, _any_clause(self.operations, facts))

    def uncertain_fields(self, facts: Facts) -> list[str]:
        """Fields evaluating to MAYBE (why the rule only *may* match)."""
        conditions = [c for clause in (*self.sources, *self.operations) for c in clause]
        return [c.field for c in conditions if c(facts) is Tri.MAYBE]


def _any_clause(clauses: tuple[Clause, ...], facts: Facts) -> Tri:
    if not clauses:
        return Tri.YES
    return any_of(all_of(condition(facts) for condition in clause) for clause in clauses)


def compile_rule(rule: Rule | RuleView) -> CompiledRule:
    """Compile one rule; ValueError (naming the value) if a pattern cannot be compiled."""
    return CompiledRule(
        sources=tuple(_clause(item.source) for item in rule.from_),
        operations=tuple(_clause(item.operation) for item in rule.to),
    )


def _clause(model: Source | Operation | ClauseView) -> Clause:
    dumped = model.model_dump(by_alias=True)
    conditions = []
    for name, values in dumped.items():
        if not values:
            continue
        builder = _BUILDERS[_base(name)]
        conditions.append(Condition(name, name.startswith("not"), tuple(map(builder, values))))
    return tuple(conditions)


def http_fields(operation: Operation) -> list[str]:
    """The HTTP-only fields an operation sets (YAML names)."""
    dumped = operation.model_dump(by_alias=True)
    return [name for name, values in dumped.items() if values and _base(name) in HTTP_FIELDS]


def _base(name: str) -> str:
    return name[3].lower() + name[4:] if name.startswith("not") else name


def explain(fields: Sequence[str], facts: Facts) -> str:
    """Say why these fields are MAYBE for this request, one phrase per cause."""
    reasons: list[str] = []
    for name in fields:
        reason = _why(_base(name), facts)
        if reason not in reasons:
            reasons.append(reason)
    return "; ".join(reasons)


def _why(field: str, facts: Facts) -> str:
    if field in HTTP_FIELDS and not facts.http:
        return f"{field} cannot be seen on a TCP connection"
    if field in ("principals", "namespaces", "serviceAccounts"):
        if facts.peer is None:
            return f"{field}: plaintext request, no identity to prove or disprove it"
        return f"{field}: peer {facts.peer} is not in the mesh's trust domain"
    if field == "paths":
        return (
            "paths: matches only as some backends read the path (case, trailing '/' "
            "or '.', ;params, percent-decoding)"
        )
    if field == "methods":
        return "methods: matches only case-insensitively or as HEAD served by GET"
    return f"{field}: no Host header"


def policy_name(policy: AuthorizationPolicy | PolicyView) -> str:
    return f"{policy.metadata.namespace}/{policy.metadata.name}"
