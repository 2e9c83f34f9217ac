"""AuthorizationPolicy JSON as the engine reads it, without pydantic.

The control plane validated every policy (``hybridmesh.resources``) before it put it in a
snapshot; the proxy only needs to *read* that JSON. Importing pydantic and the resource models
costs a proxy worker ~13 MB RSS (issue 3 wants ≤ 30 MB with every feature on), so the proxy
builds these small frozen views instead, with the same attribute names the engine reads from
the models (``metadata.namespace``, ``spec.rules[i].from_[j].source``, ...). Structural
surprises (a field of the wrong type) raise :class:`ViewError`; patterns are checked when the
rules are compiled, exactly as for models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = ["ClauseView", "PolicyView", "ViewError", "parse_policy"]

_SOURCE_FIELDS: Final = ("principals", "notPrincipals", "namespaces", "notNamespaces",
                         "serviceAccounts", "notServiceAccounts")
_OPERATION_FIELDS: Final = ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods",
                            "paths", "notPaths")


class ViewError(ValueError):
    """A snapshot policy does not have the shape the control plane promises."""


@dataclass(frozen=True, slots=True)
class ClauseView:
    """A ``source`` or an ``operation``: YAML field name → values."""

    values: Mapping[str, tuple[str, ...]]

    def model_dump(self, *, by_alias: bool = True) -> dict[str, list[str]]:
        """The same shape ``Source``/``Operation.model_dump(by_alias=True)`` has."""
        return {name: list(values) for name, values in self.values.items()}


@dataclass(frozen=True, slots=True)
class FromView:
    source: ClauseView


@dataclass(frozen=True, slots=True)
class ToView:
    operation: ClauseView


@dataclass(frozen=True, slots=True)
class RuleView:
    from_: tuple[FromView, ...]
    to: tuple[ToView, ...]


@dataclass(frozen=True, slots=True)
class SelectorView:
    match_labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RefView:
    name: str


@dataclass(frozen=True, slots=True)
class SpecView:
    selector: SelectorView | None
    target_refs: tuple[RefView, ...]
    action: Literal["ALLOW", "DENY"]
    rules: tuple[RuleView, ...]


@dataclass(frozen=True, slots=True)
class MetaView:
    name: str
    namespace: str


@dataclass(frozen=True, slots=True)
class PolicyView:
    metadata: MetaView
    spec: SpecView


def parse_policy(raw: object) -> PolicyView:
    """One snapshot policy (``model_dump(mode="json", by_alias=True)``) as a view."""
    doc = _mapping(raw, "policy")
    meta = _mapping(doc.get("metadata"), "metadata")
    spec = _mapping(doc.get("spec", {}), "spec")
    action = spec.get("action", "ALLOW")
    if action not in ("ALLOW", "DENY"):
        raise ViewError(f"action must be ALLOW or DENY, not {action!r}")
    selector = spec.get("selector")
    return PolicyView(
        MetaView(_text(meta.get("name"), "metadata.name"),
                 _text(meta.get("namespace", "default"), "metadata.namespace")),
        SpecView(
            selector=None if selector is None else SelectorView(_labels(selector)),
            target_refs=tuple(RefView(_text(_mapping(ref, "targetRef").get("name"), "name"))
                              for ref in _list(spec.get("targetRefs"), "targetRefs")),
            action=action,
            rules=tuple(_rule(rule) for rule in _list(spec.get("rules"), "rules")),
        ),
    )


def _rule(raw: object) -> RuleView:
    rule = _mapping(raw, "rule")
    sources = tuple(FromView(_clause(_mapping(item, "from").get("source"), _SOURCE_FIELDS))
                    for item in _list(rule.get("from"), "from"))
    operations = tuple(ToView(_clause(_mapping(item, "to").get("operation"), _OPERATION_FIELDS))
                       for item in _list(rule.get("to"), "to"))
    return RuleView(sources, operations)


def _clause(raw: object, fields: tuple[str, ...]) -> ClauseView:
    doc = _mapping(raw, "source/operation")
    unknown = set(doc) - set(fields)
    if unknown:
        raise ViewError(f"unknown field(s) {sorted(unknown)}")
    values = {name: tuple(_text(v, name) for v in _list(doc.get(name), name)) for name in fields}
    if not any(values.values()):
        raise ViewError("an empty source/operation would match everything")
    return ClauseView(values)


def _labels(raw: object) -> dict[str, str]:
    labels = _mapping(_mapping(raw, "selector").get("matchLabels"), "matchLabels")
    return {_text(k, "label"): _text(v, "label") for k, v in labels.items()}


def _mapping(raw: object, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ViewError(f"{what} must be an object")
    return raw


def _list(raw: object, what: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ViewError(f"{what} must be a list")
    return raw


def _text(raw: object, what: str) -> str:
    if not isinstance(raw, str):
        raise ViewError(f"{what} must be a string")
    return raw
