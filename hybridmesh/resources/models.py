"""Every resource kind, and the table that maps a YAML ``kind`` to its model.

The models live in one small private module per kind; this module is their public face.
"""

from __future__ import annotations

from hybridmesh.resources._mesh import MeshConfig, MeshConfigSpec, MtlsSettings, Node, NodeSpec
from hybridmesh.resources._meta import API_VERSION, Labels, ObjectMeta, Path, Resource
from hybridmesh.resources._policy import (
    AuthorizationPolicy,
    AuthorizationPolicySpec,
    Operation,
    PolicyTargetRef,
    Rule,
    RuleFrom,
    RuleTo,
    Source,
    WorkloadSelector,
)
from hybridmesh.resources._route import (
    BackendRef,
    HTTPHeaderMatch,
    HTTPPathMatch,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteMatch,
    HTTPRouteRule,
    HTTPRouteSpec,
    HTTPTimeouts,
    ParentRef,
)
from hybridmesh.resources._service import APP_PROTOCOLS, Service, ServicePort, ServiceSpec
from hybridmesh.resources._types import PLACEMENTS, Placement
from hybridmesh.resources._workload import (
    PLACEHOLDERS,
    ContainerPort,
    EnvVar,
    ResourceList,
    ResourceRequirements,
    Workload,
    WorkloadSpec,
)

__all__ = [
    "API_VERSION",
    "APP_PROTOCOLS",
    "KINDS",
    "PLACEHOLDERS",
    "PLACEMENTS",
    "AuthorizationPolicy",
    "AuthorizationPolicySpec",
    "BackendRef",
    "ContainerPort",
    "EnvVar",
    "HTTPHeaderMatch",
    "HTTPPathMatch",
    "HTTPRetry",
    "HTTPRoute",
    "HTTPRouteMatch",
    "HTTPRouteRule",
    "HTTPRouteSpec",
    "HTTPTimeouts",
    "Labels",
    "MeshConfig",
    "MeshConfigSpec",
    "MtlsSettings",
    "Node",
    "NodeSpec",
    "ObjectMeta",
    "Operation",
    "ParentRef",
    "Path",
    "Placement",
    "PolicyTargetRef",
    "Resource",
    "ResourceList",
    "ResourceRequirements",
    "Rule",
    "RuleFrom",
    "RuleTo",
    "Service",
    "ServicePort",
    "ServiceSpec",
    "Source",
    "Workload",
    "WorkloadSelector",
    "WorkloadSpec",
]

KINDS: dict[str, type[Resource]] = {
    cls.__name__: cls
    for cls in (MeshConfig, Node, Workload, Service, AuthorizationPolicy, HTTPRoute)
}
"""YAML ``kind`` → model, in the order messages list them."""
