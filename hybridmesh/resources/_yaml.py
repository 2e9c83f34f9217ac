"""Line-aware YAML loading: plain Python data plus the line of every key and list item.

PyYAML's composer gives each node a start mark; walking the composed tree before
constructing it records ``path -> line`` (paths as YAML spells them), which is what lets a
schema error deep in ``spec`` point at its own line. The text is split at ``---`` markers
and each piece parsed alone, so a syntax error in one document does not hide the problems
of the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hybridmesh.resources._meta import Path
from hybridmesh.resources.errors import Problem

__all__ = ["Document", "parse_documents"]

_DOC_START = re.compile(r"^---(?:[ \t]|$)", re.MULTILINE)

# Parser wording -> what a person should do about it.
_EXPLANATIONS = (
    ("found character '\\t' that cannot start any token",
     "a tab character; YAML indentation must use spaces"),
    ("mapping values are not allowed here",
     'unexpected ":"; quote a value that contains ": " or fix the indentation of this line'),
    ("could not find expected ':'",
     'expected "key: value"; a ":" is missing or the indentation is wrong'),
    ("did not find expected key",
     "bad indentation: this line does not line up with the keys of its mapping"),
    ("expected <block end>, but found",
     "bad indentation: this line does not line up with the lines before it"),
    ("expected the node content",
     'a value is missing: a "[" or "{" is not closed, or a ":" or "-" has nothing after it'),
    ("found undefined alias", "an alias (*name) is used before an anchor (&name) defines it"),
    ("found unexpected end of stream",
     "the document ends inside a quoted string or a bracket; close it"),
    ("expected ',' or ']'", 'a "[...]" list is not closed or lacks a ","'),
    ("expected ',' or '}'", 'a "{...}" mapping is not closed or lacks a ","'),
    ("could not determine a constructor for the tag",
     "unsupported tag; remove the !tag (only plain YAML is accepted)"),
    ("found unhashable key", "a list or a mapping is used as a key; keys must be plain strings"),
    ("special characters are not allowed",
     "the text contains a control character that YAML does not allow"),
)


@dataclass(frozen=True, slots=True)
class Document:
    """One non-empty YAML document: its data, where it starts and where each field is."""

    source: str
    line: int
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)


def _explain(error: yaml.YAMLError) -> str:
    text = str(getattr(error, "problem", None) or error)
    for needle, explanation in _EXPLANATIONS:
        if needle in text:
            return f"invalid YAML: {explanation}"
    context = getattr(error, "context", None)
    return f"invalid YAML: {text}" + (f" ({context})" if context else "")


def _error_line(error: yaml.YAMLError, chunk: str, offset: int) -> int:
    """The 1-based line to blame, never past the chunk's last line of text."""
    last = offset + chunk.rstrip().count("\n") + 1
    return min(_raw_error_line(error, chunk, offset), last)


def _raw_error_line(error: yaml.YAMLError, chunk: str, offset: int) -> int:
    mark = getattr(error, "problem_mark", None)
    context_mark = getattr(error, "context_mark", None)
    problem = str(getattr(error, "problem", ""))
    at_end = "<stream end>" in problem or "end of stream" in problem
    if context_mark is not None and (mark is None or at_end):
        mark = context_mark
    if mark is not None:
        return int(mark.line) + 1 + offset
    position = getattr(error, "position", None)
    if isinstance(position, int):
        return chunk.count("\n", 0, position) + 1 + offset
    return offset + 1


def _chunks(text: str) -> list[tuple[int, str]]:
    """``(line offset, text)`` per ``---``-separated piece (directives keep the text whole)."""
    if re.search(r"^%", text, re.MULTILINE):
        return [(0, text)]
    starts = [0] + [m.start() for m in _DOC_START.finditer(text) if m.start() > 0]
    ends = [*starts[1:], len(text)]
    return [(text.count("\n", 0, a), text[a:b]) for a, b in zip(starts, ends, strict=True)]


class _Walker:
    """Records the line of every key and list item, and reports duplicate keys."""

    def __init__(self, offset: int, source: str) -> None:
        self.offset, self.source = offset, source
        self.lines: dict[Path, int] = {}
        self.problems: list[Problem] = []
        self._seen: set[int] = set()
        self._keys = SafeConstructor()

    def _line(self, node: Node) -> int:
        return int(node.start_mark.line) + 1 + self.offset

    def walk(self, node: Node, path: Path) -> None:
        if id(node) in self._seen:  # an alias: walked where its anchor is
            return
        self._seen.add(id(node))
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = self._line(item)
                self.walk(item, (*path, index))
        elif isinstance(node, MappingNode):
            self._walk_mapping(node, path)

    def _walk_mapping(self, node: MappingNode, path: Path) -> None:
        first_seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self._keys.construct_object(key_node)
            if not isinstance(key, str | int) or isinstance(key, bool):
                continue
            line = self._line(key_node)
            if key in first_seen:
                self.problems.append(Problem(self.source, line, (
                    f'duplicate key "{key}" (first set on line {first_seen[key]}); '
                    "remove one of them"
                )))
                continue
            first_seen[key] = line
            self.lines[(*path, key)] = line
            self.walk(value_node, (*path, key))


def _parse_chunk(chunk: str, offset: int, source: str) -> tuple[list[Document], list[Problem]]:
    documents: list[Document] = []
    problems: list[Problem] = []
    loader = yaml.SafeLoader(chunk)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            walker = _Walker(offset, source)
            walker.walk(node, ())
            data = loader.construct_document(node)
            if data is None:
                continue
            if walker.problems:
                problems.extend(walker.problems)
                continue
            start = int(node.start_mark.line) + 1 + offset
            documents.append(Document(source, start, data, {(): start, **walker.lines}))
    except yaml.YAMLError as exc:
        problems.append(Problem(source, _error_line(exc, chunk, offset), _explain(exc)))
    except RecursionError:
        problems.append(Problem(source, offset + 1, "invalid YAML: nesting is too deep"))
    finally:
        loader.dispose()
    return documents, problems


def parse_documents(text: str, source: str) -> tuple[list[Document], list[Problem]]:
    """Every non-empty document in ``text``, and the YAML syntax problems found."""
    documents: list[Document] = []
    problems: list[Problem] = []
    for offset, chunk in _chunks(text):
        found, trouble = _parse_chunk(chunk, offset, source)
        documents.extend(found)
        problems.extend(trouble)
    return documents, problems
