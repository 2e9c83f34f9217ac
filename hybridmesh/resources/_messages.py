"""Pydantic errors rewritten as sentences a user can act on.

Pydantic says ``Input should be a valid integer`` at ``('spec', 'replicas')``; the user wants
``spec.replicas: expected an integer, got "two"`` on the line of ``replicas``. This module
does the rewording; the loader adds the file, the line and the resource's name.
"""

from __future__ import annotations

import datetime
import json
import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from hybridmesh.resources._meta import API_VERSION, Path
from hybridmesh.resources._names import did_you_mean, one_of

__all__ = ["describe", "format_path", "suggestion", "translate"]


def format_path(path: Path) -> str:
    """``spec.ports[0].containerPort`` — the field as the user wrote it."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(value: object) -> str:
    """A value as the user would recognise it from their YAML."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "a boolean (YAML reads unquoted yes, no, on, off, true and false as booleans)"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime.date):
        return f"{value.isoformat()} (a date)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` down to the interesting type."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _model_at(root: type[BaseModel], path: Path) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``path`` (for listing its fields)."""
    current: Any = root
    for part in path:
        current = _unwrap(current)
        if isinstance(part, int):
            if get_origin(current) is not list:
                return None
            current = get_args(current)[0]
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        fields = {f.alias or name: f for name, f in current.model_fields.items()}
        if part not in fields:
            return None
        current = fields[part].annotation
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _allowed(root: type[BaseModel], parent: Path) -> list[str]:
    model = _model_at(root, parent)
    return [f.alias or n for n, f in model.model_fields.items()] if model else []


def suggestion(error: ErrorDetails, root: type[BaseModel]) -> Path | None:
    """For an unknown field, the path of the field it probably meant (if any)."""
    if error["type"] != "extra_forbidden":
        return None
    path: Path = tuple(p for p in error["loc"] if isinstance(p, str | int))
    guess = did_you_mean(str(path[-1]), _allowed(root, path[:-1]))
    return (*path[:-1], guess) if guess else None


def _unknown_field(root: type[BaseModel], path: Path) -> str:
    parent, name = path[:-1], str(path[-1])
    where = f" in {format_path(parent)}" if parent else ""
    allowed = _allowed(root, parent)
    guess = did_you_mean(name, allowed)
    if guess:
        return f'unknown field "{name}"{where}; did you mean "{guess}"?'
    if allowed:
        return f'unknown field "{name}"{where}; allowed fields are: {one_of(allowed)}'
    return f'unknown field "{name}"{where}; remove it'


def _literal(path: Path, value: object, expected: str) -> str:
    choices = re.findall(r"'([^']*)'", expected)
    if path == ("apiVersion",):
        return f'apiVersion {describe(value)} is not supported; use "{API_VERSION}"'
    guess = did_you_mean(value, choices) if isinstance(value, str) else None
    hint = f'; did you mean "{guess}"?' if guess else ""
    return f"{describe(value)} is not allowed; expected one of {one_of(choices)}{hint}"


_TYPE_NAMES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value pairs)",
    "model_type": "a mapping (key: value pairs)",
    "model_attributes_type": "a mapping (key: value pairs)",
}


def _wrong_type(kind: str, value: object) -> str:
    text = f"expected {_TYPE_NAMES[kind]}, got {describe(value)}"
    if kind == "string_type" and isinstance(value, bool):
        text += "; quote the value"
    elif kind == "string_type" and isinstance(value, int | float | datetime.date):
        text += f'; quote it: "{value}"'
    return text


def _body(error: ErrorDetails, path: Path) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind in _TYPE_NAMES:
        return _wrong_type(kind, value)
    if kind == "literal_error":
        return _literal(path, value, str(ctx.get("expected", "")))
    if kind == "too_short":
        return "must not be empty"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {describe(value)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {describe(value)}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"])


def translate(error: ErrorDetails, root: type[BaseModel]) -> tuple[Path, str]:
    """``(path to point at, message)`` for one pydantic error on a ``root`` document."""
    path: Path = tuple(p for p in error["loc"] if isinstance(p, str | int))
    if error["type"] == "extra_forbidden":
        return path, _unknown_field(root, path)
    if error["type"] == "missing":
        where = f" in {format_path(path[:-1])}" if len(path) > 1 else ""
        return path[:-1], f'missing required field "{path[-1]}"{where}'
    if path and path[-1] == "[key]":
        path = path[:-1]
        return path, f"{format_path(path)}: key {describe(error.get('input'))} must be a string"
    body = _body(error, path)
    if not path or path == ("apiVersion",):
        return path, body
    return path, f"{format_path(path)}: {body}"
