"""``MeshConfig`` (mesh-wide settings) and ``Node`` (a lab node)."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import IPv4Network
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field

from hybridmesh.resources._meta import Resource
from hybridmesh.resources._names import DNS_SUBDOMAIN
from hybridmesh.resources._types import Duration, Ipv4Net, Model, Placement
from hybridmesh.resources.quantities import format_duration

__all__ = ["MeshConfig", "MeshConfigSpec", "MtlsSettings", "Node", "NodeSpec"]

_MIN_TTL = timedelta(minutes=1)


def _check_ttl(value: timedelta) -> timedelta:
    if value < _MIN_TTL:
        raise ValueError(
            f"{format_duration(value)} is too short; use at least 1m "
            "(certificates are rotated before they expire)"
        )
    return value


def _check_trust_domain(value: str) -> str:
    if len(value) > 255 or not DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f'"{value}" is not a valid trust domain; use a lowercase DNS name '
            'such as "cluster.local"'
        )
    return value


def _check_pod_cidr(value: str) -> str:
    if IPv4Network(value).prefixlen > 23:
        raise ValueError(
            f'"{value}" is too small: each node gets a /24 of it; use /23 or larger, '
            'e.g. "10.244.0.0/16"'
        )
    return value


class MtlsSettings(Model):
    """Istio ``PeerAuthentication`` habit: STRICT refuses plaintext, PERMISSIVE accepts both."""

    mode: Literal["STRICT", "PERMISSIVE"] = "STRICT"


class MeshConfigSpec(Model):
    trust_domain: Annotated[str, AfterValidator(_check_trust_domain)] = "cluster.local"
    mtls: MtlsSettings = Field(default_factory=MtlsSettings)
    default_placement: Placement = "none"
    h2_upgrade_policy: Literal["DO_NOT_UPGRADE", "UPGRADE"] = "DO_NOT_UPGRADE"
    """Istio's ``h2UpgradePolicy``: UPGRADE carries HTTP/1.1 requests between two meshed
    proxies multiplexed on HTTP/2 (Linkerd's transparent upgrade; the destination proxy turns
    them back into HTTP/1.1). Off by default, as in Istio: in this proxy an HTTP/2 hop costs
    ~1.5x the CPU of a pooled keep-alive HTTP/1.1 one (docs/proxy.md)."""
    certificate_ttl: Annotated[Duration, AfterValidator(_check_ttl)] = Field(
        default=timedelta(hours=24), alias="certificateTTL"
    )
    service_cidr: Ipv4Net = Field(default="10.96.0.0/16", alias="serviceCIDR")
    pod_cidr: Annotated[Ipv4Net, AfterValidator(_check_pod_cidr)] = Field(
        default="10.244.0.0/16", alias="podCIDR"
    )

    @property
    def service_network(self) -> IPv4Network:
        return IPv4Network(self.service_cidr)

    @property
    def pod_network(self) -> IPv4Network:
        return IPv4Network(self.pod_cidr)


class MeshConfig(Resource):
    """Mesh-wide settings; at most one per topology (a default one when absent)."""

    cluster_scoped: ClassVar[bool] = True
    kind: Literal["MeshConfig"] = "MeshConfig"
    spec: MeshConfigSpec = Field(default_factory=MeshConfigSpec)


class NodeSpec(Model):
    """Empty for now: a lab node needs only its name (and labels, in metadata)."""


class Node(Resource):
    """A lab node (a network namespace with a bridge for its pods)."""

    cluster_scoped: ClassVar[bool] = True
    kind: Literal["Node"] = "Node"
    spec: NodeSpec = Field(default_factory=NodeSpec)
