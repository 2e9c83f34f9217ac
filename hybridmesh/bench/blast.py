"""What a disruption did to the lab's traffic, from flowprobe's per-request records (pure).

A *path* is one client calling one service (``same>blast-a``). Records are ``(due, done, ok)``
on the monotonic clock the bench also read when it killed a proxy or started an upgrade.

* failed share: failed requests over all requests in the window, every path counted — the
  blast radius as the whole lab sees it;
* failures on the unaffected paths: the paths that do not go through what was killed (a
  sidecar's neighbours should not notice; a node proxy takes its node's paths with it);
* time to recover: on an affected path, from the kill to the first success of a request due
  after the path's first failure (so a request that slipped through in the instant of the
  kill does not count as recovery); 0 when the path never failed; the worst affected path is
  the lab's figure. A path that never recovered in the window reports the time to the end of
  the window and ``recovered`` 0.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Outcome",
    "Record",
    "blast_metrics",
    "in_window",
    "recovery",
    "upgrade_metrics",
]

Record = tuple[float, float, bool]
"""(due, done, ok)"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A path's recovery: seconds from the disruption, and whether it recovered at all."""

    seconds: float
    recovered: bool


def in_window(records: Iterable[Sequence[object]], start: float, end: float) -> list[Record]:
    """The records due in ``[start, end)``, typed (JSON gives lists)."""
    out: list[Record] = []
    for rec in records:
        due, done, ok = float(rec[0]), float(rec[1]), bool(rec[2])  # type: ignore[arg-type]
        if start <= due < end:
            out.append((due, done, ok))
    return sorted(out)


def recovery(records: Sequence[Record], at: float, end: float) -> Outcome:
    """How long after ``at`` the path served again (see the module docstring)."""
    after = [r for r in records if r[0] >= at]
    first_failure = next((r[0] for r in after if not r[2]), None)
    if first_failure is None:
        return Outcome(0.0, True)
    success = next((r for r in after if r[0] > first_failure and r[2]), None)
    if success is None:
        return Outcome(max(end - at, 0.0), False)
    return Outcome(max(success[1] - at, 0.0), True)


def _counts(paths: Mapping[str, Sequence[Record]], names: Iterable[str]) -> tuple[int, int]:
    chosen = [paths[n] for n in names if n in paths]
    total = sum(len(p) for p in chosen)
    failed = sum(1 for p in chosen for r in p if not r[2])
    return total, failed


def blast_metrics(
    paths: Mapping[str, Sequence[Record]],
    affected: Collection[str],
    *,
    killed_at: float | None,
    end: float,
) -> dict[str, float]:
    """Figures of one blast-radius run; ``killed_at`` None when there was nothing to kill."""
    unaffected = [n for n in paths if n not in affected]
    total, failed = _counts(paths, paths)
    _, failed_affected = _counts(paths, affected)
    _, failed_unaffected = _counts(paths, unaffected)
    outcomes = [
        recovery(paths[n], killed_at, end) for n in affected if n in paths and killed_at is not None
    ]
    worst = max(outcomes, key=lambda o: o.seconds, default=Outcome(0.0, True))
    return {
        "requests": float(total),
        "failed": float(failed),
        "failed_pct": 100.0 * failed / total if total else 0.0,
        "failed_affected": float(failed_affected),
        "failed_unaffected": float(failed_unaffected),
        "recovery_s": round(worst.seconds, 4),
        "recovered": 1.0 if all(o.recovered for o in outcomes) else 0.0,
    }


def upgrade_metrics(
    paths: Mapping[str, Sequence[Record]], *, restarts: int, seconds: float
) -> dict[str, float]:
    """Figures of one upgrade run: every path counts, the restarts are the bench's own count."""
    total, failed = _counts(paths, paths)
    return {
        "requests": float(total),
        "failed": float(failed),
        "failed_pct": 100.0 * failed / total if total else 0.0,
        "pod_restarts": float(restarts),
        "upgrade_s": round(seconds, 3),
    }
