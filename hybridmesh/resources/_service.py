"""``Service``: a stable name and cluster IP in front of the pods a selector picks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PlainValidator, field_validator, model_validator

from hybridmesh.resources._meta import Labels, Resource
from hybridmesh.resources._names import DNS_LABEL, quote, repeated
from hybridmesh.resources._types import Ipv4, Model, Port, PortName
from hybridmesh.resources._workload import Workload

__all__ = ["APP_PROTOCOLS", "Service", "ServicePort", "ServiceSpec"]

APP_PROTOCOLS = ("http", "http2", "grpc", "tcp", "opaque")
AppProtocol = Literal["http", "http2", "grpc", "tcp", "opaque"]


def _target_port(value: object) -> int | str:
    """``targetPort``: a number (1-65535) or the name of a container port."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= 65535:
            return value
        raise ValueError(f"{value} is out of range; use 1-65535 or a port name")
    if isinstance(value, str) and len(value) <= 63 and DNS_LABEL.fullmatch(value):
        return value
    raise ValueError(
        f"{quote(value)} is neither a port number (1-65535) nor a port name "
        "(a DNS label such as http)"
    )


class ServicePort(Model):
    name: PortName | None = None
    port: Port
    target_port: Annotated[int | str, PlainValidator(_target_port)]
    app_protocol: AppProtocol | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_target_port(cls, data: object) -> object:
        """Kubernetes: ``targetPort`` defaults to ``port``."""
        if isinstance(data, dict) and "targetPort" not in data and "target_port" not in data:
            port = data.get("port")
            valid = isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535
            return {**data, "targetPort": port if valid else 1}
        return data

    def target_port_for(self, workload: Workload) -> int | None:
        """The numeric port this service port sends to on ``workload``'s pods.

        A named ``targetPort`` resolves through the workload's container ports; ``None``
        means the workload has no port by that name (validation reports that case).
        """
        if isinstance(self.target_port, int):
            return self.target_port
        return workload.spec.port_named(self.target_port)


class ServiceSpec(Model):
    selector: Annotated[Labels, Field(min_length=1)]
    ports: list[ServicePort] = Field(min_length=1)
    cluster_ip: Ipv4 | None = Field(default=None, alias="clusterIP")

    @field_validator("ports")
    @classmethod
    def _port_names(cls, ports: list[ServicePort]) -> list[ServicePort]:
        if len(ports) > 1 and any(p.name is None for p in ports):
            raise ValueError("every port needs a name when a Service has more than one port")
        for label, values in (
            ("name", [p.name for p in ports if p.name is not None]),
            ("port", [p.port for p in ports]),
        ):
            twice = repeated(values)
            if twice:
                raise ValueError(f"port {label} {', '.join(twice)} is declared more than once")
        return ports

    def port_named(self, name: str) -> ServicePort | None:
        return next((p for p in self.ports if p.name == name), None)

    def port_numbered(self, port: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == port), None)


class Service(Resource):
    """A cluster IP (assigned from ``serviceCIDR`` unless given) and ports, over a selector."""

    kind: Literal["Service"] = "Service"
    spec: ServiceSpec
