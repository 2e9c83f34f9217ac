"""``metadata`` and the fields every resource shares, plus where each resource came from.

A resource remembers its file and the line of each of its fields (private attributes), so
checks that run long after parsing — cross-references, a merged ``lab apply`` — can still
point the user at the exact line to edit.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, PrivateAttr

from hybridmesh.resources._names import check_label_key, check_label_value
from hybridmesh.resources._types import DnsLabel, Model

__all__ = ["API_VERSION", "UNKNOWN_SOURCE", "Labels", "ObjectMeta", "Path", "Resource"]

API_VERSION = "hybridmesh.io/v1alpha1"
UNKNOWN_SOURCE = "<unknown>"

Path = tuple[str | int, ...]
"""A field's location as YAML spells it: ``("spec", "ports", 0, "containerPort")``."""


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        check_label_key(key)
        check_label_value(key, value)
    return labels


def _check_annotations(annotations: dict[str, str]) -> dict[str, str]:
    for key in annotations:
        check_label_key(key)
    return annotations


Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]
"""Kubernetes labels (or a selector): keys and values checked for Kubernetes syntax."""


class ObjectMeta(Model):
    """Kubernetes ``metadata``: name, namespace (default ``default``), labels, annotations."""

    name: DnsLabel
    namespace: DnsLabel = "default"
    labels: Labels = Field(default_factory=dict)
    annotations: Annotated[dict[str, str], AfterValidator(_check_annotations)] = Field(
        default_factory=dict
    )


class Resource(Model):
    """Fields common to every kind; subclasses narrow ``kind`` and ``spec``."""

    cluster_scoped: ClassVar[bool] = False

    api_version: Literal["hybridmesh.io/v1alpha1"] = "hybridmesh.io/v1alpha1"
    kind: str
    metadata: ObjectMeta

    _source: str = PrivateAttr(default=UNKNOWN_SOURCE)
    _line: int = PrivateAttr(default=0)
    _lines: dict[Path, int] = PrivateAttr(default_factory=dict)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.labels

    @property
    def key(self) -> tuple[str, str, str]:
        """``(kind, namespace, name)``; namespace is "" for cluster-scoped kinds."""
        return (self.kind, "" if self.cluster_scoped else self.namespace, self.name)

    @property
    def ref(self) -> str:
        """``namespace/name`` (just ``name`` for cluster-scoped kinds)."""
        return self.name if self.cluster_scoped else f"{self.namespace}/{self.name}"

    @property
    def display(self) -> str:
        """How messages name this resource: ``Workload shop/web``."""
        return f"{self.kind} {self.ref}"

    @property
    def source(self) -> str:
        """The file this resource was read from (``<unknown>`` if built in Python)."""
        return self._source

    @property
    def line(self) -> int:
        """1-based line where this resource's document starts (0 if unknown)."""
        return self._line

    def line_of(self, *path: str | int) -> int:
        """Line of the field at ``path`` (YAML names), or of its closest present ancestor."""
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._line

    def with_origin(self, source: str, line: int, lines: dict[Path, int] | None = None) -> Self:
        """Record where this resource came from (the loader calls this; returns ``self``)."""
        self._source, self._line = source, line
        self._lines = dict(lines or {})
        return self
