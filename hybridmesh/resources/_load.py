"""YAML text → typed resources, one document at a time, collecting every problem.

Syntax errors come from :mod:`._yaml`, schema errors from pydantic (reworded by
:mod:`._messages`); both end up as :class:`Problem` values on the offending line.
"""

from __future__ import annotations

from pydantic import ValidationError

from hybridmesh.resources._messages import suggestion, translate
from hybridmesh.resources._meta import API_VERSION, Resource
from hybridmesh.resources._names import did_you_mean, one_of
from hybridmesh.resources._yaml import Document, parse_documents
from hybridmesh.resources.errors import Problem, ResourceError
from hybridmesh.resources.models import KINDS

__all__ = ["load_documents"]

_SHAPE = "each document must be one resource with apiVersion, kind, metadata and spec"


def _what(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "a scalar value"


def _kind_of(doc: Document) -> tuple[type[Resource] | None, Problem | None]:
    """The model for this document's ``kind``, or the problem that prevents choosing one."""
    kind = doc.data.get("kind")
    line = doc.lines.get(("kind",), doc.line)
    if kind is None:
        message = f'missing "kind"; set it to one of {one_of(KINDS)}'
    elif not isinstance(kind, str):
        message = f"kind must be a string, one of {one_of(KINDS)}"
    elif kind in KINDS:
        return KINDS[kind], None
    else:
        guess = did_you_mean(kind, KINDS)
        hint = f'did you mean "{guess}"?' if guess else f"expected one of {one_of(KINDS)}"
        message = f'unknown kind "{kind}"; {hint}'
    return None, Problem(doc.source, line, message)


def _prefix(model: type[Resource], data: dict[object, object]) -> str:
    """``Workload shop/web`` from raw data, as far as the data allows."""
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    namespace = meta.get("namespace", "default") if isinstance(meta, dict) else "default"
    kind = model.__name__
    if not isinstance(name, str):
        return kind
    if model.cluster_scoped or not isinstance(namespace, str):
        return f"{kind} {name}"
    return f"{kind} {namespace}/{name}"


def _to_resource(doc: Document) -> tuple[Resource | None, list[Problem]]:
    if not isinstance(doc.data, dict):
        message = f"this document is {_what(doc.data)}, not a mapping; {_SHAPE}"
        return None, [Problem(doc.source, doc.line, message)]
    model, problem = _kind_of(doc)
    if model is None:
        return None, [problem] if problem else []
    prefix = _prefix(model, doc.data)
    problems = []
    if "apiVersion" not in doc.data:
        message = f'{prefix}: missing "apiVersion"; add apiVersion: {API_VERSION}'
        problems.append(Problem(doc.source, doc.line, message))
    try:
        resource = model.model_validate(doc.data, by_name=False)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # "replica" unknown + "replicas" missing is one mistake: report only the typo.
        meant = {suggestion(error, model) for error in errors}
        for error in errors:
            if error["type"] == "missing" and tuple(error["loc"]) in meant:
                continue
            path, message = translate(error, model)
            line = _line(doc, path)
            problems.append(Problem(doc.source, line, f"{prefix}: {message}"))
        return None, problems
    return (None if problems else resource.with_origin(doc.source, doc.line, doc.lines)), problems


def _line(doc: Document, path: tuple[str | int, ...]) -> int:
    while path and path not in doc.lines:
        path = path[:-1]
    return doc.lines.get(path, doc.line)


def load_documents(text: str, source: str) -> list[Resource]:
    """Parse and schema-check every document in ``text`` (empty documents are skipped).

    Raises :class:`ResourceError` listing every syntax and schema problem, each on the
    line of the offending field; cross-references are checked later by ``build_topology``.
    """
    documents, problems = parse_documents(text, source)
    resources: list[Resource] = []
    for doc in documents:
        resource, trouble = _to_resource(doc)
        problems.extend(trouble)
        if resource is not None:
            resources.append(resource)
    if problems:
        raise ResourceError(problems)
    return resources
