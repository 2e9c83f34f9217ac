"""`hybridmesh bench --quick` for real: none vs Envoy on a lab, and everything it writes.

Checks the harness and the report (files, schema, every cell filled, none's ratios 1.0,
Envoy provably in the path), not the speed of anything.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridmesh.bench.metrics import SCENARIO_METRICS
from hybridmesh.bench.model import Results
from hybridmesh.bench.scenarios import QUICK, levels_for
from hybridmesh.cli import app as root_app
from hybridmesh.lab import cleanup

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

# `hybridmesh bench` once the root app registers it; until then the same command function on
# an app of its own (cli/bench.py's register(app) is the whole contract).
_WIRED = any(c.name == "bench" for c in root_app.registered_commands)
_SHIM = (
    "import sys, typer; from hybridmesh.cli import bench; app = typer.Typer(); "
    "bench.register(app); app.command('noop')(lambda: None); app(sys.argv[1:])"
)
HM = [sys.executable, "-m", "hybridmesh"] if _WIRED else [sys.executable, "-c", _SHIM]
CONTENDERS = ("none", "envoy-sidecar")
BenchRun = tuple[Path, "subprocess.CompletedProcess[str]", float]


@pytest.fixture(scope="module")
def bench_out(
    tmp_path_factory: pytest.TempPathFactory,
) -> BenchRun:
    cleanup.sweep()  # the bench needs the machine's lab to itself
    out = tmp_path_factory.mktemp("bench") / "out"
    started = time.monotonic()
    done = subprocess.run(
        [*HM, "bench", "--quick", "--contenders", ",".join(CONTENDERS), "--out", str(out)],
        capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"bench failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return out, done, elapsed


def _results(out: Path) -> Results:
    return Results.model_validate_json((out / "results.json").read_text())


def test_every_output_file_is_written(
    bench_out: BenchRun,
) -> None:
    out, done, _ = bench_out
    for name in ("results.json", "results.csv", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots == ["latency_cdf.png", "latency_vs_rate.png", "resources.png", "throughput.png"]
    assert all((out / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "ADDED P50" in done.stdout  # the summary table at the end


def test_results_follow_the_schema_and_every_cell_is_filled(
    bench_out: BenchRun,
) -> None:
    doc = _results(bench_out[0])
    assert doc.schema_version == 1 and doc.config.profile == "quick"
    assert [c.name for c in doc.contenders] == list(CONTENDERS)
    measured = [s.name for s in doc.scenarios if s.measured]
    # --quick's default set; scale, blast-radius and upgrade run when named (test_bench_disruption)
    assert measured == ["http-latency", "http-throughput", "tcp-rr", "tcp-stream", "grpc"]
    assert all(s.implemented for s in doc.scenarios)
    expected = {
        (s, v, lvl, c)
        for s in measured
        for v in QUICK.variants
        for lvl in levels_for(s, QUICK)
        for c in CONTENDERS
    }
    cells = {(c.scenario, c.variant, c.level, c.contender): c for c in doc.cells}
    assert set(cells) == expected
    for key, cell in cells.items():
        missing = set(SCENARIO_METRICS[key[0]]) - set(cell.metrics)
        assert not missing, f"{key} lacks {missing}"
        assert cell.metrics[SCENARIO_METRICS[key[0]][0]].median > 0, key  # rps/tps/gbps
    assert len(doc.samples) == len(expected)  # quick: one repeat each
    assert doc.failures == []
    assert doc.machine.cores >= 1 and doc.versions.envoy and doc.versions.python
    assert doc.finished_at is not None


def test_none_is_the_baseline_and_envoy_was_really_in_the_path(
    bench_out: BenchRun,
) -> None:
    doc = _results(bench_out[0])
    for cell in doc.cells:
        if cell.contender == "none":
            for name, value in cell.ratio.items():
                assert value == 1.0 or (value is None and cell.metrics[name].median == 0), name
            assert cell.metrics["cpu_proxy_us_per_op"].median == 0
        else:
            assert cell.metrics["cpu_proxy_client_us_per_op"].median > 0
            assert cell.metrics["cpu_proxy_server_us_per_op"].median > 0
            assert cell.metrics["rss_proxy_mib"].median > 10  # an Envoy on each side
    for sample in doc.samples:
        if sample.contender == "envoy-sidecar":
            assert set(sample.checks) == {"proxy_client_share", "proxy_server_share"}
            assert min(sample.checks.values()) >= 0.95
    latency = [c for c in doc.cells if c.scenario == "http-latency"]
    assert all(c.histogram is not None for c in latency)  # the CDF's data


def test_csv_and_markdown_agree_with_the_json(
    bench_out: BenchRun,
) -> None:
    out = bench_out[0]
    doc = _results(out)
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(len(c.metrics) for c in doc.cells)
    none_p50 = [r for r in rows if r["contender"] == "none" and r["metric"] == "p50_ms"]
    assert none_p50 and all(float(r["ratio_to_none"]) == 1.0 for r in none_p50)
    md = (out / "report.md").read_text()
    assert "## Summary" in md and "## Load generator calibration" in md
    assert "## Load generator check" in md and "### grpc" in md
    tools = {(c.tool, c.variant) for c in doc.calibration}
    assert tools == {(t, v) for t in ("h2load", "loadgen") for v in QUICK.variants}


def test_the_lab_is_gone_afterwards(
    bench_out: BenchRun,
) -> None:
    assert not cleanup.leftovers()
    json.loads((bench_out[0] / "results.json").read_text())  # and the results survived it
