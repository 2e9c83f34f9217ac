"""A validated topology: the frozen value the control plane and the lab are built from.

``load_*`` read YAML, :func:`build_topology` checks cross-references and fills defaults
(a MeshConfig, a ``node-1``), :func:`merge` combines a running topology with ``lab apply``
input while each resource keeps the file it came from, so errors still point there.
"""

from __future__ import annotations

import importlib.resources
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from hybridmesh.resources._load import load_documents
from hybridmesh.resources._validate import CHECKS, Index, selects
from hybridmesh.resources.errors import Problem, ResourceError
from hybridmesh.resources.models import (
    AuthorizationPolicy,
    HTTPRoute,
    MeshConfig,
    Node,
    ObjectMeta,
    Resource,
    Service,
    Workload,
)

__all__ = [
    "DEFAULT_NODE_NAME",
    "DEFAULT_TOPOLOGY_NAME",
    "Topology",
    "build_topology",
    "dump_documents",
    "load_default",
    "load_file",
    "load_text",
    "merge",
]

DEFAULT_TOPOLOGY_NAME = "builtin:demo.yaml"
"""The source name of the embedded demo topology (what its error messages start with)."""
DEFAULT_NODE_NAME = "node-1"

_R = TypeVar("_R", bound=Resource)


def _of_kind(resources: Sequence[Resource], kind: type[_R]) -> tuple[_R, ...]:
    return tuple(r for r in resources if isinstance(r, kind))


@dataclass(frozen=True, slots=True)
class Topology:
    """Every resource, validated as a whole, with the defaults made explicit."""

    source: str
    resources: tuple[Resource, ...]  # as given (defaults not included): what to persist
    mesh: MeshConfig
    nodes: tuple[Node, ...]
    workloads: tuple[Workload, ...]
    services: tuple[Service, ...]
    authorization_policies: tuple[AuthorizationPolicy, ...]
    http_routes: tuple[HTTPRoute, ...]

    def placement_of(self, workload: Workload) -> str:
        """The workload's own placement, or the mesh default when it names none."""
        return workload.spec.placement or self.mesh.spec.default_placement

    def workloads_selected_by(self, namespace: str, selector: dict[str, str]) -> list[Workload]:
        """Workloads in ``namespace`` whose labels include every pair of ``selector``."""
        return [
            w for w in self.workloads if w.namespace == namespace and selects(selector, w.labels)
        ]

    def service(self, namespace: str, name: str) -> Service | None:
        return next((s for s in self.services if (s.namespace, s.name) == (namespace, name)), None)

    def workload(self, namespace: str, name: str) -> Workload | None:
        return next((w for w in self.workloads if (w.namespace, w.name) == (namespace, name)), None)

    def kind_counts(self) -> dict[str, int]:
        """How many resources of each kind were given (defaults not counted)."""
        return dict(Counter(r.kind for r in self.resources))

    def to_yaml(self) -> str:
        """The given resources as multi-document YAML that loads back to the same topology."""
        return dump_documents(self.resources)


def _document(resource: Resource) -> dict[str, Any]:
    body = resource.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    body.pop("apiVersion", None)
    body.pop("kind", None)
    return {"apiVersion": resource.api_version, "kind": resource.kind, **body}


def dump_documents(resources: Sequence[Resource]) -> str:
    """Resources as YAML documents, each headed by a comment naming where it came from."""
    parts = []
    for resource in resources:
        text = yaml.safe_dump(_document(resource), sort_keys=False, allow_unicode=True)
        parts.append(f"# from {resource.source}:{resource.line}\n{text}")
    return "---\n".join(parts)


def build_topology(resources: Sequence[Resource], source: str | None = None) -> Topology:
    """Check cross-references and fill defaults; raises :class:`ResourceError` with all problems.

    ``source`` names the topology (default: the files its resources came from).
    """
    meshes = _of_kind(resources, MeshConfig)
    mesh = meshes[0] if meshes else MeshConfig(metadata=ObjectMeta(name="mesh"))
    nodes = _of_kind(resources, Node) or (Node(metadata=ObjectMeta(name=DEFAULT_NODE_NAME)),)
    index = Index(resources, mesh, [n.name for n in nodes])
    problems = [p for check in CHECKS for p in check(index)]
    if problems:
        raise ResourceError(problems)
    sources = dict.fromkeys(r.source for r in resources)
    return Topology(
        source=source if source is not None else ", ".join(sources) or "<empty>",
        resources=tuple(resources),
        mesh=mesh,
        nodes=nodes,
        workloads=_of_kind(resources, Workload),
        services=_of_kind(resources, Service),
        authorization_policies=_of_kind(resources, AuthorizationPolicy),
        http_routes=_of_kind(resources, HTTPRoute),
    )


def merge(base: Sequence[Resource], overlay: Sequence[Resource]) -> list[Resource]:
    """``base`` with each overlay resource replacing its namesake (same kind, namespace, name)
    in place; new ones are appended. Validate the result with :func:`build_topology`."""
    result = list(base)
    position = {r.key: i for i, r in reversed(list(enumerate(base)))}
    replaced: set[tuple[str, str, str]] = set()
    for resource in overlay:
        if resource.key in position and resource.key not in replaced:
            result[position[resource.key]] = resource
            replaced.add(resource.key)
        else:
            result.append(resource)  # a repeat inside overlay stays: validation reports it
    return result


def load_text(text: str, source: str) -> Topology:
    """Parse, schema-check and cross-check ``text`` (named ``source`` in messages)."""
    return build_topology(load_documents(text, source), source)


def load_file(path: str | os.PathLike[str]) -> Topology:
    """Load a topology file; an unreadable file is a :class:`ResourceError` too."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as stream:
            text = stream.read()
    except UnicodeDecodeError as exc:
        raise ResourceError([Problem(name, 0, f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ResourceError([Problem(name, 0, f"cannot read: {exc.strerror}")]) from None
    return load_text(text, name)


def load_default() -> Topology:
    """The embedded demo topology (``hybridmesh demo`` and ``lab up`` without a file)."""
    text = (importlib.resources.files("hybridmesh.resources") / "topologies" / "demo.yaml")
    return load_text(text.read_text(encoding="utf-8"), DEFAULT_TOPOLOGY_NAME)
