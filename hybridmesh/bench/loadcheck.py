"""Is the load generator the bottleneck? The check the report states for every cell (pure).

Two ways a benchmark lies about a proxy: the load generator could not send what was asked
(open loop: the baseline below its target rate, so every contender ran lighter than the
label says), or the generator itself saturated a core (closed loop: the "max throughput"
is the client's, not the path's). For every cell with a load generator this reports its CPU
(% of one core) and, where the scenario has a target rate, the achieved share of it; a cell
is flagged when the achieved rate is under ``MIN_TARGET_SHARE`` of its target or the
generator used more than ``MAX_LOADGEN_PCT`` of a core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hybridmesh.bench.model import CellDoc

__all__ = ["MAX_LOADGEN_PCT", "MIN_TARGET_SHARE", "LoadCheck", "load_checks"]

MIN_TARGET_SHARE = 0.95
MAX_LOADGEN_PCT = 90.0
_TARGETED = ("http-latency",)  # open loop: the level is the target rate


@dataclass(frozen=True, slots=True)
class LoadCheck:
    scenario: str
    variant: str
    level: int | None
    contender: str
    target_rps: float | None  # None: closed loop, no target
    achieved_rps: float | None
    loadgen_cpu_pct: float | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _median(cell: CellDoc, metric: str) -> float | None:
    stat = cell.metrics.get(metric)
    return None if stat is None else stat.median


def _target(cell: CellDoc) -> float | None:
    """The rate asked for: a run's own ``target_rps``, or the level of an open-loop sweep."""
    if "target_rps" in cell.metrics:
        return cell.metrics["target_rps"].median
    return float(cell.level) if cell.scenario in _TARGETED and cell.level else None


def _check(cell: CellDoc) -> LoadCheck:
    target = _target(cell)
    achieved = _median(cell, "rps") if "rps" in cell.metrics else _median(cell, "tps")
    cpu = _median(cell, "cpu_loadgen_pct")
    problems = []
    if target is not None and achieved is not None and achieved < MIN_TARGET_SHARE * target:
        problems.append(f"reached {achieved / target:.0%} of the target rate")
    if cpu is not None and cpu > MAX_LOADGEN_PCT:
        problems.append(f"load generator at {cpu:.0f}% of a core")
    return LoadCheck(
        cell.scenario, cell.variant, cell.level, cell.contender, target, achieved, cpu,
        tuple(problems),
    )  # fmt: skip


def load_checks(cells: Sequence[CellDoc]) -> list[LoadCheck]:
    """One check per cell that ran a load generator the bench accounts (its CPU is known)."""
    return [_check(c) for c in cells if "cpu_loadgen_pct" in c.metrics]
