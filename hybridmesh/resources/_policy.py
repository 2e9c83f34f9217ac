"""``AuthorizationPolicy`` in Istio's ``security.istio.io/v1`` shape.

A policy targets workloads (``selector.matchLabels``), Services (``targetRefs``) or, with
neither, the whole namespace; its rules match ``from`` sources and ``to`` operations. String
matches follow Istio: exact, ``prefix*``, ``*suffix`` or ``*``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, PlainValidator, model_validator

from hybridmesh.resources._meta import Labels, Resource
from hybridmesh.resources._names import DNS_LABEL, check_principal, check_wildcard, quote
from hybridmesh.resources._types import Model

__all__ = [
    "AuthorizationPolicy",
    "AuthorizationPolicySpec",
    "Operation",
    "PolicyTargetRef",
    "Rule",
    "RuleFrom",
    "RuleTo",
    "Source",
    "WorkloadSelector",
]

_METHOD = re.compile(r"[A-Z]+")


def _policy_port(value: object) -> str:
    """Istio writes ports as strings; an unquoted number is accepted and normalized."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(text, str) and text.isdigit() and 1 <= int(text) <= 65535:
        return str(int(text))
    raise ValueError(f'{quote(value)} is not a port number; use "1" to "65535", e.g. "8080"')


def _method(value: str) -> str:
    check_wildcard(value)
    if not _METHOD.fullmatch(value.strip("*")) and value != "*":
        fix = value.upper()
        raise ValueError(f'"{value}" must be an upper-case HTTP method, e.g. "{fix}"')
    return value


def _path(value: str) -> str:
    check_wildcard(value)
    if not value.startswith(("/", "*")):
        raise ValueError(f'"{value}" must start with "/" (or "*" for a suffix match)')
    return value


def _namespace(value: str) -> str:
    check_wildcard(value)
    return value


def _host(value: str) -> str:
    return check_wildcard(value)


def _service_account(value: str) -> str:
    namespace, _, name = value.partition("/")
    if not (DNS_LABEL.fullmatch(namespace) and DNS_LABEL.fullmatch(name)):
        raise ValueError(
            f'"{value}" must be written <namespace>/<name>, e.g. "shop/web"'
        )
    return value


Principal = Annotated[str, AfterValidator(check_principal)]
PortMatch = Annotated[str, PlainValidator(_policy_port)]


def _require_something(model: Model, what: str) -> None:
    """Istio refuses an empty ``source``/``operation``: it would silently match everything."""
    if not any(getattr(model, name) for name in type(model).model_fields):
        fields = ", ".join(f.alias or n for n, f in type(model).model_fields.items())
        raise ValueError(f"{what} must not be empty; set at least one of: {fields}")


class Source(Model):
    principals: list[Principal] = Field(default_factory=list)
    not_principals: list[Principal] = Field(default_factory=list)
    namespaces: list[Annotated[str, AfterValidator(_namespace)]] = Field(default_factory=list)
    not_namespaces: list[Annotated[str, AfterValidator(_namespace)]] = Field(default_factory=list)
    service_accounts: list[Annotated[str, AfterValidator(_service_account)]] = Field(
        default_factory=list
    )
    not_service_accounts: list[Annotated[str, AfterValidator(_service_account)]] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        _require_something(self, "source")
        return self


class Operation(Model):
    hosts: list[Annotated[str, AfterValidator(_host)]] = Field(default_factory=list)
    not_hosts: list[Annotated[str, AfterValidator(_host)]] = Field(default_factory=list)
    ports: list[PortMatch] = Field(default_factory=list)
    not_ports: list[PortMatch] = Field(default_factory=list)
    methods: list[Annotated[str, AfterValidator(_method)]] = Field(default_factory=list)
    not_methods: list[Annotated[str, AfterValidator(_method)]] = Field(default_factory=list)
    paths: list[Annotated[str, AfterValidator(_path)]] = Field(default_factory=list)
    not_paths: list[Annotated[str, AfterValidator(_path)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        _require_something(self, "operation")
        return self


class RuleFrom(Model):
    source: Source


class RuleTo(Model):
    operation: Operation


class Rule(Model):
    """A request matches a rule when it matches any ``from`` AND any ``to`` (empty = any)."""

    from_: list[RuleFrom] = Field(default_factory=list, alias="from")
    to: list[RuleTo] = Field(default_factory=list)


class WorkloadSelector(Model):
    match_labels: Annotated[Labels, Field(min_length=1)]


class PolicyTargetRef(Model):
    group: Literal[""] = ""
    kind: Literal["Service"] = "Service"
    name: str


class AuthorizationPolicySpec(Model):
    selector: WorkloadSelector | None = None
    target_refs: list[PolicyTargetRef] = Field(default_factory=list)
    action: Literal["ALLOW", "DENY"] = "ALLOW"
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if self.selector is not None and self.target_refs:
            raise ValueError(
                "set either selector or targetRefs, not both (neither = the whole namespace)"
            )
        return self


class AuthorizationPolicy(Resource):
    """Allow or deny requests to the targeted workloads; any ALLOW makes the target default-deny."""

    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"
    spec: AuthorizationPolicySpec = Field(default_factory=AuthorizationPolicySpec)
