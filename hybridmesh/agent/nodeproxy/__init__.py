"""The node proxy: one per node, sidecarless mesh for ``placement: node`` pods (docs/node.md)."""

from hybridmesh.agent.nodeproxy.credentials import (
    NodeRequestRefused,
    NodeTokens,
    authorize_node_request,
    is_node_request,
    node_request_token,
)
from hybridmesh.agent.nodeproxy.limits import Limiter, Limits
from hybridmesh.agent.nodeproxy.source import (
    BpfSourceResolver,
    SourceResolver,
    Steered,
    TableSourceResolver,
)

__all__ = [
    "BpfSourceResolver",
    "Limiter",
    "Limits",
    "NodeRequestRefused",
    "NodeTokens",
    "SourceResolver",
    "Steered",
    "TableSourceResolver",
    "authorize_node_request",
    "is_node_request",
    "node_request_token",
]
