"""Reusable field types: ports, DNS names, durations, addresses, placements.

Each type validates *and* explains: a bad value raises :class:`ValueError` with the fix in
its text, so every model that uses the type gets the same clear message for free.
"""

from __future__ import annotations

from datetime import timedelta
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
)
from pydantic.alias_generators import to_camel

from hybridmesh.resources._names import check_dns_label, quote
from hybridmesh.resources.quantities import format_duration, parse_duration

__all__ = [
    "PLACEMENTS",
    "DnsLabel",
    "Duration",
    "Ipv4",
    "Ipv4Net",
    "Model",
    "Placement",
    "Port",
    "PortName",
]

PLACEMENTS = ("none", "sidecar", "sidecar+ebpf", "node", "kernel")
Placement = Literal["none", "sidecar", "sidecar+ebpf", "node", "kernel"]


class Model(BaseModel):
    """Base of every resource model: strict types, no unknown fields, camelCase in YAML."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
    )


def _check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is out of range; use 1-65535")
    return value


def _to_duration(value: object) -> object:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f'duration {value} has no unit; write e.g. "{value}s" or "{value}ms"')
    if not isinstance(value, str):
        raise ValueError(f'expected a duration such as "10s", got {quote(value)}')
    return parse_duration(value)


def _to_network(value: object) -> str:
    if isinstance(value, IPv4Network):
        return str(value)
    example = 'write it as address/prefix, e.g. "10.96.0.0/16"'
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{quote(value)} is not an IPv4 network; {example}")
    try:
        return str(IPv4Network(value))
    except ValueError:
        pass
    try:
        fixed = IPv4Network(value, strict=False)
    except ValueError:
        raise ValueError(f"{quote(value)} is not an IPv4 network; {example}") from None
    raise ValueError(f'"{value}" has host bits set; did you mean "{fixed}"?')


def _to_address(value: object) -> str:
    if isinstance(value, IPv4Address):
        return str(value)
    if isinstance(value, str):
        try:
            return str(IPv4Address(value))
        except ValueError:
            pass
    raise ValueError(f'{quote(value)} is not an IPv4 address such as "10.96.0.10"')


Port = Annotated[int, AfterValidator(_check_port)]
DnsLabel = Annotated[str, AfterValidator(check_dns_label)]
PortName = DnsLabel
Duration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str),
]
Ipv4Net = Annotated[str, PlainValidator(_to_network)]
"""An IPv4 network in CIDR form, normalized ("10.96.0.0/16"); kept as text for consumers."""
Ipv4 = Annotated[str, PlainValidator(_to_address)]
"""An IPv4 address, normalized ("10.96.0.10")."""
