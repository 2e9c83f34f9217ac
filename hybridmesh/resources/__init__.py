"""Typed resource model (pydantic): the only place that knows YAML.

``load_file``/``load_text``/``load_default`` turn Kubernetes-shaped multi-document YAML into a
frozen :class:`Topology`, or raise :class:`ResourceError` listing every problem as
``FILE:LINE: what is wrong, and how to fix it``.
"""

from hybridmesh.resources._load import load_documents
from hybridmesh.resources.errors import Problem, ResourceError
from hybridmesh.resources.models import (
    API_VERSION,
    APP_PROTOCOLS,
    KINDS,
    PLACEHOLDERS,
    PLACEMENTS,
    AuthorizationPolicy,
    BackendRef,
    ContainerPort,
    EnvVar,
    HTTPRoute,
    HTTPRouteRule,
    MeshConfig,
    Node,
    ObjectMeta,
    ParentRef,
    Placement,
    Resource,
    ResourceList,
    Service,
    ServicePort,
    Workload,
)
from hybridmesh.resources.quantities import (
    format_duration,
    parse_cpu_millis,
    parse_duration,
    parse_memory_bytes,
)
from hybridmesh.resources.topology import (
    DEFAULT_NODE_NAME,
    DEFAULT_TOPOLOGY_NAME,
    Topology,
    build_topology,
    dump_documents,
    load_default,
    load_file,
    load_text,
    merge,
)

__all__ = [
    "API_VERSION",
    "APP_PROTOCOLS",
    "DEFAULT_NODE_NAME",
    "DEFAULT_TOPOLOGY_NAME",
    "KINDS",
    "PLACEHOLDERS",
    "PLACEMENTS",
    "AuthorizationPolicy",
    "BackendRef",
    "ContainerPort",
    "EnvVar",
    "HTTPRoute",
    "HTTPRouteRule",
    "MeshConfig",
    "Node",
    "ObjectMeta",
    "ParentRef",
    "Placement",
    "Problem",
    "Resource",
    "ResourceError",
    "ResourceList",
    "Service",
    "ServicePort",
    "Topology",
    "Workload",
    "build_topology",
    "dump_documents",
    "format_duration",
    "load_default",
    "load_documents",
    "load_file",
    "load_text",
    "merge",
    "parse_cpu_millis",
    "parse_duration",
    "parse_memory_bytes",
]
