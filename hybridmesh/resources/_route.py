"""``HTTPRoute`` in the Gateway API's GAMMA (mesh) shape: routes attached to a Service.

Defaults follow the Gateway API so consumers never see a hole: a route without rules has
one rule matching every path, a rule without matches matches ``PathPrefix /``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from hybridmesh.resources._meta import Resource
from hybridmesh.resources._names import quote
from hybridmesh.resources._types import DnsLabel, Duration, Model, Port

__all__ = [
    "BackendRef",
    "HTTPHeaderMatch",
    "HTTPPathMatch",
    "HTTPRetry",
    "HTTPRoute",
    "HTTPRouteMatch",
    "HTTPRouteRule",
    "HTTPRouteSpec",
    "HTTPTimeouts",
    "ParentRef",
]

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_HOSTNAME = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {quote(value)}: {exc}") from None
    return value


def _header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{quote(value)} is not a valid HTTP header name")
    return value


def _hostname(value: str) -> str:
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise ValueError(
            f'"{value}" is not a valid hostname; use a lowercase DNS name, optionally starting "*."'
        )
    return value


def _retry_code(value: int) -> int:
    if not 400 <= value <= 599:
        raise ValueError(f"{value} is not an HTTP error status; use 400-599")
    return value


class ParentRef(Model):
    """The Service whose traffic this route applies to (optionally one of its ports)."""

    group: Literal[""] = ""
    kind: Literal["Service"] = "Service"
    name: DnsLabel
    namespace: DnsLabel | None = None
    port: Port | None = None


class HTTPPathMatch(Model):
    type: Literal["PathPrefix", "Exact", "RegularExpression"] = "PathPrefix"
    value: str = "/"

    @model_validator(mode="after")
    def _check_value(self) -> Self:
        if self.type == "RegularExpression":
            _check_regex(self.value)
        elif not self.value.startswith("/"):
            raise ValueError(f'value "{self.value}" must start with "/" for type {self.type}')
        return self


class HTTPHeaderMatch(Model):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: Annotated[str, AfterValidator(_header_name)]
    value: str

    @model_validator(mode="after")
    def _check_value(self) -> Self:
        if self.type == "RegularExpression":
            _check_regex(self.value)
        return self


class HTTPRouteMatch(Model):
    path: HTTPPathMatch = Field(default_factory=HTTPPathMatch)
    headers: list[HTTPHeaderMatch] = Field(default_factory=list)
    method: HTTPMethod | None = None


class BackendRef(Model):
    """A weighted backend Service; ``port`` may be left out when the Service has one port."""

    group: Literal[""] = ""
    kind: Literal["Service"] = "Service"
    name: DnsLabel
    namespace: DnsLabel | None = None
    port: Port | None = None
    weight: int = Field(default=1, ge=0, le=1_000_000)


class HTTPTimeouts(Model):
    request: Duration | None = None
    backend_request: Duration | None = None

    @model_validator(mode="after")
    def _backend_within_request(self) -> Self:
        request, backend = self.request, self.backend_request
        if request and backend and backend > request:
            raise ValueError("backendRequest must not be longer than request (Gateway API rule)")
        return self


class HTTPRetry(Model):
    codes: list[Annotated[int, AfterValidator(_retry_code)]] = Field(default_factory=list)
    attempts: int = Field(default=1, ge=0)
    backoff: Duration | None = None


class HTTPRouteRule(Model):
    matches: list[HTTPRouteMatch] = Field(default_factory=lambda: [HTTPRouteMatch()])
    backend_refs: list[BackendRef] = Field(default_factory=list)
    timeouts: HTTPTimeouts | None = None
    retry: HTTPRetry | None = None


class HTTPRouteSpec(Model):
    parent_refs: Annotated[list[ParentRef], Field(min_length=1)]
    hostnames: list[Annotated[str, AfterValidator(_hostname)]] = Field(default_factory=list)
    rules: list[HTTPRouteRule] = Field(default_factory=lambda: [HTTPRouteRule()])


class HTTPRoute(Resource):
    """Routing for requests to a Service: matches, weighted backends, timeouts, retries."""

    kind: Literal["HTTPRoute"] = "HTTPRoute"
    spec: HTTPRouteSpec
