"""Typed errors for bad resources: every problem names a file, a line and a fix.

A user who mistypes a field wants to see *all* that is wrong at once, each with the line to
edit, the way a compiler reports errors; so loading collects :class:`Problem` values and
raises one :class:`ResourceError` carrying them all, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Problem", "ResourceError"]


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong with the input: ``FILE:LINE: message`` (line is 1-based, 0 = unknown)."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"

    def to_json(self) -> dict[str, str | int]:
        return {"file": self.source, "line": self.line, "message": self.message}


class ResourceError(Exception):
    """The resources are invalid; :attr:`problems` lists every problem found, sorted."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
