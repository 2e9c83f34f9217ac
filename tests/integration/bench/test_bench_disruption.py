"""`hybridmesh bench --quick -s blast-radius,upgrade,scale` for real: none, sidecar, kernel.

Checks the harness of the scenarios --quick leaves out by default: every cell measured, a
killed sidecar fails its own paths only and recovers, an upgrade restarts every sidecar pod
(none: nothing), the scale levels are applied and a sidecar's memory grows with its pods
while the kernel placement's is its node agent's, and the report shows it. Not the speed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridmesh.bench.metrics import SCENARIO_METRICS
from hybridmesh.bench.model import CellDoc, Results
from hybridmesh.bench.scenarios import QUICK
from hybridmesh.lab import cleanup

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

CONTENDERS = ("none", "sidecar", "kernel")
SCENARIOS = ("blast-radius", "upgrade", "scale")
BASE_PODS = 6  # http, tcp, two clients, blast-a, blast-b


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Results, float]:
    cleanup.sweep()  # the bench needs the machine's lab to itself
    out = tmp_path_factory.mktemp("bench") / "out"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "hybridmesh", "bench", "--quick", "--scenarios",
         ",".join(SCENARIOS), "--contenders", ",".join(CONTENDERS), "--out", str(out)],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"bench failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return out, Results.model_validate_json((out / "results.json").read_text()), elapsed


def _cells(doc: Results, scenario: str) -> dict[tuple[int | None, str], CellDoc]:
    return {(c.level, c.contender): c for c in doc.cells if c.scenario == scenario}


def _m(cell: CellDoc, metric: str) -> float:
    return cell.metrics[metric].median


def test_every_cell_is_measured_with_every_metric(bench_run: tuple[Path, Results, float]) -> None:
    _, doc, _ = bench_run
    assert doc.failures == []
    assert [s.name for s in doc.scenarios if s.measured] == list(SCENARIOS)
    for scenario in SCENARIOS:
        levels = QUICK.scale_pods if scenario == "scale" else (None,)
        cells = _cells(doc, scenario)
        assert set(cells) == {(lvl, c) for lvl in levels for c in CONTENDERS}, scenario
        for key, cell in cells.items():
            assert cell.variant == "same-node"
            missing = set(SCENARIO_METRICS[scenario]) - set(cell.metrics) - {"node_restarts"}
            assert not missing, f"{scenario} {key} lacks {missing}"


def test_a_killed_sidecar_fails_its_own_paths_only_and_recovers(
    bench_run: tuple[Path, Results, float],
) -> None:
    cells = _cells(bench_run[1], "blast-radius")
    none, sidecar = cells[None, "none"], cells[None, "sidecar"]
    assert _m(none, "failed") == 0 and _m(none, "recovery_s") == 0
    assert _m(sidecar, "failed_affected") > 0
    assert _m(sidecar, "failed_unaffected") == 0
    assert _m(sidecar, "recovered") == 1
    assert 0 < _m(sidecar, "recovery_s") < QUICK.disruption_s
    assert 0 < _m(sidecar, "failed_pct") < 50  # two of four paths, for part of the window
    assert _m(cells[None, "kernel"], "recovered") == 1  # its agent was killed instead


def test_upgrade_restarts_every_sidecar_pod_and_nothing_for_none(
    bench_run: tuple[Path, Results, float],
) -> None:
    cells = _cells(bench_run[1], "upgrade")
    assert _m(cells[None, "none"], "pod_restarts") == 0
    assert _m(cells[None, "none"], "failed") == 0
    assert _m(cells[None, "sidecar"], "pod_restarts") == BASE_PODS
    assert _m(cells[None, "sidecar"], "upgrade_s") > 0
    kernel = cells[None, "kernel"]
    assert _m(kernel, "pod_restarts") == 0 and _m(kernel, "node_restarts") == 2  # two nodes


def test_sidecar_memory_grows_with_pods_and_kernel_pays_its_agent_once(
    bench_run: tuple[Path, Results, float],
) -> None:
    cells = _cells(bench_run[1], "scale")
    small, big = QUICK.scale_pods[0], QUICK.scale_pods[-1]
    assert _m(cells[small, "none"], "mesh_pss_mib") == 0
    side_small, side_big = (
        _m(cells[small, "sidecar"], "mesh_pss_mib"),
        _m(cells[big, "sidecar"], "mesh_pss_mib"),
    )
    assert side_small > 5 * small  # a few MiB per sidecar at least
    assert side_big > 0.6 * side_small * big / small  # roughly linear in pods
    kernel_small, kernel_big = (_m(cells[n, "kernel"], "shared_pss_mib") for n in (small, big))
    assert kernel_small > 0 and kernel_big < 2 * kernel_small  # one agent, whatever the pods
    for cell in cells.values():
        assert _m(cell, "rps") > 0.9 * 100 and _m(cell, "errors") == 0


def test_the_report_shows_the_new_sections_and_plots(
    bench_run: tuple[Path, Results, float],
) -> None:
    out = bench_run[0]
    md = (out / "report.md").read_text()
    for heading in ("### blast-radius", "### upgrade", "### scale", "## Load generator check"):
        assert heading in md
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots == ["disruption.png", "scale.png"]
    assert not cleanup.leftovers()
