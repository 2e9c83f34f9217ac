"""The control plane's view of the world: plain frozen values computed from resources.

These are the contract between the control plane and everything that realizes or consumes it
(the lab, proxies, node agents). They carry concrete addresses, never YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "WAYPOINT_LABEL",
    "WAYPOINT_SERVICE_ACCOUNT",
    "Endpoint",
    "Limits",
    "NodeInfo",
    "PodInfo",
    "ServiceInfo",
    "ServicePortInfo",
]

WAYPOINT_LABEL = "hybridmesh.io/waypoint-for"
"""On a waypoint pod (control/waypoints.py): the name of the Service, same namespace, whose L7
proxy it is. Node proxies and the waypoint itself read it from their snapshots."""
WAYPOINT_SERVICE_ACCOUNT = "waypoint"
"""Every waypoint's service account: ``spiffe://<td>/ns/<ns>/sa/waypoint`` (Istio's habit)."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A lab node: a network namespace with a bridge for its pods and an uplink to the fabric."""

    name: str
    index: int  # 1-based, stable for the life of the lab
    pod_cidr: str  # e.g. "10.244.1.0/24"
    gateway: str  # the bridge address inside pod_cidr, e.g. "10.244.1.1"
    fabric_ip: str  # the node's address on the inter-node fabric, e.g. "172.31.255.1"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-pod resource limits, already converted from Kubernetes quantities."""

    cpu_millis: int | None = None  # 500 == "500m" == half a core
    memory_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class PodInfo:
    """One replica of a Workload, with its address and the exact process it runs."""

    name: str  # "<workload>-<i>"
    namespace: str
    workload: str
    index: int
    node: str
    ip: str
    service_account: str
    placement: str
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[tuple[str, int], ...] = ()  # (name, containerPort)
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)

    @property
    def key(self) -> str:
        """``namespace/name``: how the CLI and the API address a pod."""
        return f"{self.namespace}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "workload": self.workload,
            "node": self.node,
            "ip": self.ip,
            "serviceAccount": self.service_account,
            "placement": self.placement,
            "labels": dict(self.labels),
            "ports": [{"name": n, "containerPort": p} for n, p in self.ports],
        }


@dataclass(frozen=True, slots=True)
class ServicePortInfo:
    name: str
    port: int
    target_port: int
    app_protocol: str | None  # http | http2 | grpc | tcp | opaque | None (detect)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "targetPort": self.target_port,
            "appProtocol": self.app_protocol,
        }


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A ready pod backing a service (Kubernetes EndpointSlice entry)."""

    pod: str
    namespace: str
    ip: str
    node: str
    service_account: str
    placement: str
    workload: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "workload": self.workload,
            "namespace": self.namespace,
            "ip": self.ip,
            "node": self.node,
            "serviceAccount": self.service_account,
            "placement": self.placement,
        }


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    name: str
    namespace: str
    cluster_ip: str
    ports: tuple[ServicePortInfo, ...]
    selector: dict[str, str]
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "clusterIP": self.cluster_ip,
            "ports": [p.to_json() for p in self.ports],
            "selector": dict(self.selector),
            "endpoints": [e.to_json() for e in self.endpoints],
        }
