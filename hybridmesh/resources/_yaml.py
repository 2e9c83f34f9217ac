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

# YAML's line breaks (PyYAML counts all of these when it numbers lines, so we do too).
_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
_DOC_START = re.compile("---(?:[ \t\n\r\x85\u2028\u2029]|$)")

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
    last = offset + _count_breaks(chunk.rstrip()) + 1
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
        return _count_breaks(chunk[:position]) + 1 + offset
    return offset + 1


def _count_breaks(text: str) -> int:
    return len(_BREAK.findall(text))


def _chunks(text: str) -> list[tuple[int, str]]:
    """``(line offset, text)`` per ``---``-separated piece (directives keep the text whole)."""
    line_starts = [0] + [m.end() for m in _BREAK.finditer(text)]
    if any(text.startswith("%", p) for p in line_starts):
        return [(0, text)]
    cuts = [(0, 0)] + [
        (line, p) for line, p in enumerate(line_starts) if p > 0 and _DOC_START.match(text, p)
    ]
    ends = [p for _, p in cuts[1:]] + [len(text)]
    return [(line, text[p:end]) for (line, p), end in zip(cuts, ends, strict=True)]


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


def _syntax_problem(exc: Exception, chunk: str, offset: int, source: str) -> Problem:
    if isinstance(exc, yaml.YAMLError):
        return Problem(source, _error_line(exc, chunk, offset), _explain(exc))
    return Problem(source, offset + 1, "invalid YAML: nesting is too deep")


def _parse_chunk(chunk: str, offset: int, source: str) -> tuple[list[Document], list[Problem]]:
    documents: list[Document] = []
    problems: list[Problem] = []
    try:
        loader = yaml.SafeLoader(chunk)  # the reader already checks characters here
    except yaml.YAMLError as exc:
        return documents, [_syntax_problem(exc, chunk, offset, source)]
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # check_node() said there is one; keep mypy and us honest
                break
            walker = _Walker(offset, source)
            walker.walk(node, ())
            data = loader.construct_document(node)
            if data is None or walker.problems:
                problems.extend(walker.problems)
                continue
            start = int(node.start_mark.line) + 1 + offset
            documents.append(Document(source, start, data, {(): start, **walker.lines}))
    except (yaml.YAMLError, RecursionError) as exc:
        problems.append(_syntax_problem(exc, chunk, offset, source))
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
