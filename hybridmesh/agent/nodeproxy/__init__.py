"""The node proxy: one per node, sidecarless mesh for ``placement: node`` pods (docs/node.md).

The names below are loaded on first use (PEP 562): the sidecar engine imports the tunnel
modules of this package for HBONE, and must not pay for the node proxy's source resolver
(ctypes, libbpf), credentials and limits in every worker (~1 MB RSS).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "NodeRequestRefused": "credentials",
    "NodeTokens": "credentials",
    "authorize_node_request": "credentials",
    "is_node_request": "credentials",
    "node_request_token": "credentials",
    "Limiter": "limits",
    "Limits": "limits",
    "BpfSourceResolver": "source",
    "SourceResolver": "source",
    "Steered": "source",
    "TableSourceResolver": "source",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
