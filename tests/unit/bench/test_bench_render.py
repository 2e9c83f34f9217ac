"""CSV, markdown and HTML rendering of a results document."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from bench_fixtures import histogram, latency_metrics, results, sample

from hybridmesh.bench.html import markdown_to_html
from hybridmesh.bench.model import FailureDoc, Results
from hybridmesh.bench.render import (
    CSV_COLUMNS,
    fmt_number,
    fmt_stat,
    markdown_table,
    report_markdown,
    results_csv,
)
from hybridmesh.bench.stats import stat


def _doc() -> Results:
    return results([
        sample("none", latency_metrics(0.2, 1.0), order=0, hist=histogram(200, 210)),
        sample("envoy-sidecar", latency_metrics(0.6, 3.0, proxy_cpu=300), order=1,
               hist=histogram(600, 650)),
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (0.0, "0"), (0.12345, "0.123"), (2.5, "2.50"), (12.34, "12.3"),
     (123.4, "123"), (31960.2, "31,960"), (-0.5, "-0.500")],
)  # fmt: skip
def test_numbers_get_three_significant_digits(value: float | None, text: str) -> None:
    assert fmt_number(value) == text


def test_a_stat_shows_min_max_only_when_they_differ() -> None:
    assert fmt_stat(stat([1.5, 2.5, 3.5])) == "2.50 (1.50–3.50)"
    assert fmt_stat(stat([2.5])) == "2.50"
    assert fmt_stat(stat([4.0, 4.0])) == "4"


def test_markdown_tables_escape_pipes() -> None:
    table = markdown_table(["a", "b|c"], [["x|y", "z"]])
    assert table.splitlines() == ["| a | b\\|c |", "|---|---|", "| x\\|y | z |"]


def test_csv_has_one_row_per_cell_and_metric_with_ratio_and_delta() -> None:
    doc = _doc()
    rows = list(csv.DictReader(io.StringIO(results_csv(doc))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == sum(len(c.metrics) for c in doc.cells)
    p50 = {r["contender"]: r for r in rows if r["metric"] == "p50_ms"}
    assert p50["none"]["ratio_to_none"] == "1.0"
    assert float(p50["envoy-sidecar"]["ratio_to_none"]) == pytest.approx(3.0)
    assert float(p50["envoy-sidecar"]["delta_to_none"]) == pytest.approx(0.4)
    assert p50["none"]["unit"] == "ms" and p50["none"]["level"] == "1000"
    proxy_cpu = {r["contender"]: r for r in rows if r["metric"] == "cpu_proxy_us_per_op"}
    assert proxy_cpu["none"]["ratio_to_none"] == ""  # 0/0 has no ratio


def test_report_has_summary_machine_method_results_and_the_load_check() -> None:
    md = report_markdown(_doc(), {"http-latency:cdf": "plots/latency_cdf.png"})
    for heading in ("## Summary", "## Machine and versions", "## Method", "### http-latency",
                    "## Load generator check"):  # fmt: skip
        assert heading in md
    assert "reached its target rate in 1 of 1 open-loop cells" in md
    assert "No cell is flagged." in md
    assert "![http-latency:cdf](plots/latency_cdf.png)" in md
    summary = md.split("## Summary")[1].split("##")[0]
    envoy_row = next(line for line in summary.splitlines() if line.startswith("| envoy-sidecar"))
    assert "| 0.400 |" in envoy_row  # added p50
    assert "×3.00" in envoy_row
    assert "### tcp-rr" not in md  # not measured: no empty section


def test_html_is_standalone_escaped_and_embeds_images(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(b"\x89PNG fake")
    md = (
        "# Title <b>\n\nsome `code` and **bold** & *it*\n\n"
        "| h1 | h2 |\n|---|---|\n| x\\|y | <z> |\n\n- one\n- two\n\n![alt](plots/a.png)\n"
    )
    page = markdown_to_html(md, title="t&t", base=tmp_path)
    assert page.startswith("<!DOCTYPE html>") and "<title>t&amp;t</title>" in page
    assert "<h1>Title &lt;b&gt;</h1>" in page
    assert "<code>code</code>" in page and "<strong>bold</strong>" in page and "<em>it</em>" in page
    assert "&amp;" in page
    assert "<td>x|y</td><td>&lt;z&gt;</td>" in page
    assert "<ul><li>one</li><li>two</li></ul>" in page
    assert 'src="data:image/png;base64,' in page


def test_html_keeps_a_missing_image_as_a_link(tmp_path: Path) -> None:
    page = markdown_to_html("![x](plots/none.png)\n", title="t", base=tmp_path)
    assert 'src="plots/none.png"' in page


def test_the_whole_report_renders_to_html() -> None:
    doc = _doc()
    page = markdown_to_html(report_markdown(doc, {}), title="bench")
    assert page.count("<table>") >= 3
    assert "envoy-sidecar" in page


def test_failed_runs_are_listed_not_hidden() -> None:
    doc = _doc()
    doc.failures.append(
        FailureDoc(
            scenario="tcp-stream",
            variant="same-node",
            level=None,
            contender="sidecar",
            repeat=0,
            error="server closed | without ack\n",
        )
    )
    md = report_markdown(doc, {})
    section = md.split("## Failed runs")[1]
    assert "| tcp-stream | same-node |  | sidecar | 0 | server closed \\| without ack |" in section
    assert "## Failed runs" not in report_markdown(_doc(), {})
