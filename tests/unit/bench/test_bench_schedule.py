"""The run plan: every contender alternates within each cell, none first, repeats counted."""

from __future__ import annotations

import itertools

import pytest

from hybridmesh.bench.schedule import CellKey, cells, plan_runs


def test_cells_are_scenario_major_and_sweep_each_scenarios_levels() -> None:
    keys = cells(["http-latency", "tcp-rr"], ["same-node", "cross-node"],
                 {"http-latency": [100, 1000], "tcp-rr": [None]})  # fmt: skip
    assert keys == [
        CellKey("http-latency", "same-node", 100),
        CellKey("http-latency", "same-node", 1000),
        CellKey("http-latency", "cross-node", 100),
        CellKey("http-latency", "cross-node", 1000),
        CellKey("tcp-rr", "same-node", None),
        CellKey("tcp-rr", "cross-node", None),
    ]


def test_contenders_alternate_abab_within_every_cell() -> None:
    keys = [CellKey("http-latency", "same-node", 100), CellKey("tcp-rr", "same-node", None)]
    runs = plan_runs(keys, ["none", "envoy-sidecar"], 3, warmup_s=1, duration_s=5)
    first_cell = [r.contender for r in runs if r.cell == keys[0]]
    assert first_cell == ["none", "envoy-sidecar"] * 3
    # a cell is finished before the next starts: no contender ever runs twice in a row
    assert all(a.contender != b.contender for a, b in itertools.pairwise(runs))
    assert [r.cell for r in runs[:6]] == [keys[0]] * 6


def test_each_contender_gets_every_repeat_once_per_cell_and_orders_are_positions() -> None:
    keys = [CellKey("tcp-rr", v, None) for v in ("same-node", "cross-node")]
    runs = plan_runs(keys, ["none", "sidecar", "envoy-sidecar"], 2, warmup_s=0.5, duration_s=2)
    assert len(runs) == 2 * 3 * 2
    assert [r.order for r in runs] == list(range(len(runs)))
    for key in keys:
        for contender in ("none", "sidecar", "envoy-sidecar"):
            repeats = [r.repeat for r in runs if r.cell == key and r.contender == contender]
            assert repeats == [0, 1]
    assert {(r.warmup_s, r.duration_s) for r in runs} == {(0.5, 2)}


@pytest.mark.parametrize(("contenders", "repeats"), [(["none"], 0), ([], 1), (["none", "none"], 1)])
def test_bad_plans_are_refused(contenders: list[str], repeats: int) -> None:
    with pytest.raises(ValueError):
        plan_runs([CellKey("tcp-rr", "same-node", None)], contenders, repeats,
                  warmup_s=0, duration_s=1)  # fmt: skip


def test_cell_labels_name_the_level_and_its_unit() -> None:
    assert (
        CellKey("http-latency", "same-node", 500).label("req/s")
        == "http-latency same-node @ 500 req/s"
    )
    assert CellKey("tcp-rr", "cross-node", None).label() == "tcp-rr cross-node"
