"""The shape of a check, its outcome and the report: `linkerd check`'s model.

A :class:`Check` is a row of a declarative table — category, name, hint, fatal — plus a *probe*
that looks at the host and returns an :class:`Outcome`. Keeping the row and the probe apart is
what lets the table be read (and documented) without running anything, and lets each probe be
unit-tested against a fake host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hybridmesh.doctor.host import Session

__all__ = ["Check", "CheckResult", "Outcome", "Probe", "ProbeError", "Report"]


class ProbeError(Exception):
    """A probe found the requirement unmet; the message becomes the check's detail.

    Probes raise it from deep inside helpers so they need not thread failures back by hand.
    """


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a probe saw: whether the requirement holds, and a short human detail either way."""

    ok: bool
    detail: str = ""

    @classmethod
    def passed(cls, detail: str = "") -> Outcome:
        return cls(True, detail)

    @classmethod
    def failed(cls, detail: str) -> Outcome:
        return cls(False, detail)


Probe = Callable[["Session"], Outcome]


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the table. ``fatal`` means hybridmesh cannot work while this check fails;
    a failing non-fatal check is a warning (some feature, e.g. a load generator, is missing)."""

    category: str
    name: str
    hint: str
    fatal: bool
    probe: Probe


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: Check
    outcome: Outcome

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    @property
    def is_warning(self) -> bool:
        return not self.outcome.ok and not self.check.fatal

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.check.category,
            "name": self.check.name,
            "ok": self.outcome.ok,
            "fatal": self.check.fatal,
            "detail": self.outcome.detail,
            "hint": self.check.hint,
        }


@dataclass(frozen=True, slots=True)
class Report:
    """All results, in table order. ``ok`` is false only when a *fatal* check failed."""

    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok or not r.check.fatal for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [r.to_json() for r in self.results]}
