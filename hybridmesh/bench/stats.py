"""Aggregation of repeated runs: median with min–max per cell, ratio and difference to ``none``.

The median, not the mean: with three repeats on a shared 2-core machine one disturbed run is
likely, and the median ignores it while min–max still shows it happened. Ratios are of
medians (contender / none) and a baseline of zero gives no ratio (``None``) rather than an
infinity; the difference (contender − none) is what "added latency" means.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from hybridmesh.bench.model import CellDoc, SampleDoc, Stat
from hybridmesh.lab.workloads._stats import Histogram

__all__ = ["BASELINE", "aggregate", "ratio", "stat"]

BASELINE = "none"


def stat(values: Sequence[float]) -> Stat:
    """Median, min, max and count of ``values`` (at least one)."""
    if not values:
        raise ValueError("no values to aggregate")
    return Stat(
        median=float(statistics.median(values)),
        min=float(min(values)),
        max=float(max(values)),
        n=len(values),
    )


def ratio(value: float, baseline: float) -> float | None:
    """``value / baseline``; None when the baseline is 0 (nothing to compare against)."""
    if baseline == 0:
        return None
    return value / baseline


_Key = tuple[str, str, int | None, str]


def _key(s: SampleDoc | CellDoc) -> _Key:
    return (s.scenario, s.variant, s.level, s.contender)


def _merged_histogram(samples: Iterable[SampleDoc]) -> dict[str, object] | None:
    docs = [s.histogram for s in samples if s.histogram is not None]
    if not docs:
        return None
    total = Histogram()
    for doc in docs:
        total.merge(Histogram.from_json(doc))
    return total.to_json()


def _cell(samples: Sequence[SampleDoc]) -> CellDoc:
    first = samples[0]
    names = sorted({m for s in samples for m in s.metrics})
    metrics = {m: stat([s.metrics[m] for s in samples if m in s.metrics]) for m in names}
    return CellDoc(
        scenario=first.scenario,
        variant=first.variant,
        level=first.level,
        contender=first.contender,
        metrics=metrics,
        ratio={},
        delta={},
        histogram=_merged_histogram(samples),
    )


def _compare(cell: CellDoc, base: CellDoc | None) -> CellDoc:
    if base is None:
        return cell
    ratios: dict[str, float | None] = {}
    deltas: dict[str, float] = {}
    for name, value in cell.metrics.items():
        if name not in base.metrics:
            continue
        ratios[name] = ratio(value.median, base.metrics[name].median)
        deltas[name] = value.median - base.metrics[name].median
    return cell.model_copy(update={"ratio": ratios, "delta": deltas})


def aggregate(samples: Sequence[SampleDoc], contender_order: Sequence[str] = ()) -> list[CellDoc]:
    """One cell per (scenario, variant, level, contender), compared with ``none``'s cell.

    Cells keep the order in which their first sample was measured, contenders within a cell
    ordered as ``contender_order`` (then by name)."""
    groups: dict[_Key, list[SampleDoc]] = {}
    for sample in sorted(samples, key=lambda s: s.order):
        groups.setdefault(_key(sample), []).append(sample)
    cells = {key: _cell(group) for key, group in groups.items()}
    rank = {name: i for i, name in enumerate(contender_order)}
    first_seen = {key[:3]: i for i, key in reversed(list(enumerate(cells)))}
    ordered = sorted(
        cells,
        key=lambda k: (first_seen[k[:3]], rank.get(k[3], len(rank)), k[3]),
    )
    return [_compare(cells[k], cells.get((*k[:3], BASELINE))) for k in ordered]
