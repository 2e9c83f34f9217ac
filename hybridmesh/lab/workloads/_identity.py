"""Who a workload process is (from the env the lab sets) and the ``/_hm/stats`` document shape.

Both demo workloads publish the same document so the bench reads them the same way:
``{"service", "pod", "namespace", "ip", "role", "edges": {dest: EdgeStats JSON}, ...}``.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._stats import EdgeStats

__all__ = ["PodIdentity", "edge_name", "stats_document"]

_REPLICA_SUFFIX = re.compile(r"-\d+$")


@dataclass(frozen=True, slots=True)
class PodIdentity:
    service: str
    pod: str
    namespace: str
    ip: str

    @classmethod
    def from_env(cls, name: str | None, default_service: str) -> PodIdentity:
        """POD_NAME / POD_NAMESPACE / POD_IP as the lab sets them; sane values outside a lab.

        Without ``--name`` the service is the pod name minus its replica suffix
        (pods are named ``<workload>-<i>``).
        """
        pod = os.environ.get("POD_NAME") or socket.gethostname()
        service = name or (
            _REPLICA_SUFFIX.sub("", os.environ["POD_NAME"])
            if os.environ.get("POD_NAME")
            else default_service
        )
        return cls(
            service=service,
            pod=pod,
            namespace=os.environ.get("POD_NAMESPACE") or "default",
            ip=os.environ.get("POD_IP") or "",
        )


def edge_name(url: str) -> str:
    """The destination an outbound call is accounted to: host, plus port when not 80."""
    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or 80
    return host if port == 80 else f"{host}:{port}"


def stats_document(
    identity: PodIdentity, role: str, edges: Mapping[str, EdgeStats], **extra: Any
) -> dict[str, Any]:
    return {
        "service": identity.service,
        "pod": identity.pod,
        "namespace": identity.namespace,
        "ip": identity.ip,
        "role": role,
        "edges": {dest: stats.to_json() for dest, stats in sorted(edges.items())},
        **extra,
    }
