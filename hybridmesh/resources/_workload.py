"""``Workload``: the lab's stand-in for a Deployment — a command run in N pods."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, PlainValidator, field_validator, model_validator

from hybridmesh.resources._meta import ObjectMeta, Resource
from hybridmesh.resources._names import did_you_mean, one_of, quote, repeated
from hybridmesh.resources._types import DnsLabel, Model, Placement, Port, PortName
from hybridmesh.resources.quantities import parse_cpu_millis, parse_memory_bytes

__all__ = [
    "IDENTITY_ANNOTATION",
    "IDENTITY_VALUES",
    "PLACEHOLDERS",
    "ContainerPort",
    "EnvVar",
    "ResourceList",
    "ResourceRequirements",
    "Workload",
    "WorkloadMeta",
    "WorkloadSpec",
]

IDENTITY_ANNOTATION = "hybridmesh.io/identity"
"""Per-workload opt-out of workload identity (Istio habit: per-workload annotations).
``disabled``: the lab gives the pods' sidecars no bootstrap token, so they get no SVID and
talk plaintext; PERMISSIVE receivers accept them, STRICT ones refuse them."""
IDENTITY_VALUES = ("enabled", "disabled")

PLACEHOLDERS = ("port", "pod", "namespace", "node", "pod_ip")
"""Names a command may use as ``{name}``; the lab fills them in per pod."""
_IDENTIFIER_IN_BRACES = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def _check_placeholders(argument: str) -> str:
    """Catch typos: any ``{identifier}`` must be a known placeholder (other braces are text)."""
    for name in _IDENTIFIER_IN_BRACES.findall(argument):
        if name not in PLACEHOLDERS:
            guess = did_you_mean(name, PLACEHOLDERS)
            hint = f'did you mean "{{{guess}}}"?' if guess else "remove the braces"
            raise ValueError(
                f"{quote(argument)} uses unknown placeholder {{{name}}}; {hint} "
                f"(placeholders: {one_of('{' + p + '}' for p in PLACEHOLDERS)})"
            )
    return argument


def _check_env_name(name: str) -> str:
    if not name or "=" in name:
        raise ValueError(f"{quote(name)} is not a valid name; it must be non-empty, without '='")
    return name


def _cpu(value: object) -> str:
    parse_cpu_millis(value)
    return str(value)


def _memory(value: object) -> str:
    parse_memory_bytes(value)
    return str(value)


CommandArgument = Annotated[str, AfterValidator(_check_placeholders)]


class EnvVar(Model):
    """Kubernetes ``env`` entry (``valueFrom`` is not supported)."""

    name: Annotated[str, AfterValidator(_check_env_name)]
    value: str = ""


class ContainerPort(Model):
    name: PortName | None = None
    container_port: Port
    protocol: Literal["TCP"] = "TCP"


class ResourceList(Model):
    """``cpu`` and ``memory`` as Kubernetes quantities, as written; parsed on access."""

    cpu: Annotated[str, PlainValidator(_cpu)] | None = None
    memory: Annotated[str, PlainValidator(_memory)] | None = None

    @property
    def cpu_millis(self) -> int | None:
        return None if self.cpu is None else parse_cpu_millis(self.cpu)

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_memory_bytes(self.memory)


class ResourceRequirements(Model):
    limits: ResourceList = Field(default_factory=ResourceList)
    requests: ResourceList = Field(default_factory=ResourceList)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Self:
        for what in ("cpu_millis", "memory_bytes"):
            request, limit = getattr(self.requests, what), getattr(self.limits, what)
            if request is not None and limit is not None and request > limit:
                field = what.split("_")[0]
                raise ValueError(
                    f"requests.{field} ({getattr(self.requests, field)}) is more than "
                    f"limits.{field} ({getattr(self.limits, field)}); lower the request"
                )
        return self


class WorkloadSpec(Model):
    service_account: DnsLabel = "default"
    replicas: int = Field(default=1, ge=0)
    node: str | None = None
    placement: Placement | None = None
    command: Annotated[list[CommandArgument], Field(min_length=1)]
    env: list[EnvVar] = Field(default_factory=list)
    ports: list[ContainerPort] = Field(default_factory=list)
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"

    @field_validator("ports")
    @classmethod
    def _unique_ports(cls, ports: list[ContainerPort]) -> list[ContainerPort]:
        names = [p.name for p in ports if p.name is not None]
        numbers = [p.container_port for p in ports]
        for label, values in (("name", names), ("containerPort", numbers)):
            twice = repeated(values)
            if twice:
                raise ValueError(f"port {label} {', '.join(twice)} is declared more than once")
        return ports

    def port_named(self, name: str) -> int | None:
        """The ``containerPort`` of the port called ``name``, if there is one."""
        return next((p.container_port for p in self.ports if p.name == name), None)

    def render_command(self, values: Mapping[str, object]) -> list[str]:
        """``command`` with each ``{placeholder}`` replaced by ``str(values[name])``.

        Only the five placeholder names are replaced; any other brace is literal text.
        ``{port}`` conventionally means the first container port.
        """
        return [
            _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), argument)
            for argument in self.command
        ]

    def env_dict(self) -> dict[str, str]:
        """``env`` as a mapping (a later entry with the same name wins, as in Kubernetes)."""
        return {e.name: e.value for e in self.env}


def _check_identity(annotations: dict[str, str]) -> dict[str, str]:
    value = annotations.get(IDENTITY_ANNOTATION)
    if value is not None and value not in IDENTITY_VALUES:
        raise ValueError(
            f"annotation {IDENTITY_ANNOTATION} is {quote(value)}; it must be "
            '"enabled" or "disabled" (disabled: the pods\' sidecars get no identity, no mTLS)'
        )
    return annotations


class WorkloadMeta(ObjectMeta):
    """``metadata`` of a Workload: the annotations the lab acts on are checked too."""

    annotations: Annotated[dict[str, str], AfterValidator(_check_identity)] = Field(
        default_factory=dict
    )


class Workload(Resource):
    """A command run in ``replicas`` pods named ``<name>-<i>``."""

    kind: Literal["Workload"] = "Workload"
    metadata: WorkloadMeta
    spec: WorkloadSpec

    @property
    def identity_disabled(self) -> bool:
        """True when the ``hybridmesh.io/identity: disabled`` annotation opts its pods out
        of workload identity (and so of mTLS)."""
        return self.metadata.annotations.get(IDENTITY_ANNOTATION) == "disabled"
