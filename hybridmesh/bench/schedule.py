"""The order runs happen in: contenders alternate within every cell (A B A B ...).

Measuring all of A and then all of B lets slow drift on the machine (thermal state, another
process, page cache) land on one contender; alternating spreads it over both. A *cell* is
(scenario, variant, level); each cell is measured ``repeats`` times per contender, and
within one repeat every contender runs once, in the same order, ``none`` first.

Every run carries its own warm-up (traffic on the same connections, discarded before the
measured window), so a contender never starts cold after another one ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CellKey", "Run", "cells", "plan_runs"]


@dataclass(frozen=True, slots=True, order=True)
class CellKey:
    scenario: str
    variant: str
    level: int | None

    def label(self, unit: str = "") -> str:
        level = "" if self.level is None else f" @ {self.level}{' ' + unit if unit else ''}"
        return f"{self.scenario} {self.variant}{level}"


@dataclass(frozen=True, slots=True)
class Run:
    cell: CellKey
    contender: str
    repeat: int  # 0-based
    order: int  # position in the whole plan, 0-based
    warmup_s: float
    duration_s: float


def cells(
    scenarios: Sequence[str],
    variants: Sequence[str],
    levels: dict[str, Sequence[int | None]],
) -> list[CellKey]:
    """Every (scenario, variant, level), scenario-major, in the order given."""
    return [
        CellKey(scenario, variant, level)
        for scenario in scenarios
        for variant in variants
        for level in levels[scenario]
    ]


def plan_runs(
    cell_keys: Sequence[CellKey],
    contenders: Sequence[str],
    repeats: int,
    *,
    warmup_s: float,
    duration_s: float,
) -> list[Run]:
    """The full run order: per cell, ``repeats`` rounds of every contender in turn."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not contenders or len(set(contenders)) != len(contenders):
        raise ValueError(f"contenders must be distinct and non-empty, got {list(contenders)}")
    runs: list[Run] = []
    for cell in cell_keys:
        for repeat in range(repeats):
            for contender in contenders:
                runs.append(Run(cell, contender, repeat, len(runs), warmup_s, duration_s))
    return runs
