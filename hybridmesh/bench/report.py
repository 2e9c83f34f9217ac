"""Write every output of a bench into its directory: JSON, CSV, markdown, HTML and plots.

Reports are made from results.json alone, so ``write_report(load_results(dir), dir)``
re-renders an old run (after a renderer change, say) without measuring again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from hybridmesh.bench.html import markdown_to_html
from hybridmesh.bench.model import Results
from hybridmesh.bench.render import report_markdown, results_csv

__all__ = ["ReportError", "ReportFiles", "load_results", "write_report"]

PLOTS_DIR = "plots"


class ReportError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class ReportFiles:
    json: Path
    csv: Path
    markdown: Path
    html: Path
    plots: tuple[Path, ...]


def load_results(out: Path) -> Results:
    path = out if out.suffix == ".json" and not out.is_dir() else out / "results.json"
    try:
        return Results.model_validate_json(path.read_text())
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror}", "is it a bench output?") from None
    except ValidationError as exc:
        raise ReportError(f"{path} is not a bench results document:\n{exc}") from None


def write_report(results: Results, out: Path) -> ReportFiles:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    json_path.write_text(results.model_dump_json(indent=1))
    csv_path = out / "results.csv"
    csv_path.write_text(results_csv(results))
    from hybridmesh.bench.plots import draw_all  # matplotlib is slow to import: only here

    plots = draw_all(results, out / PLOTS_DIR)
    images = {key: f"{PLOTS_DIR}/{path.name}" for key, path in plots.items()}
    markdown = report_markdown(results, images)
    md_path = out / "report.md"
    md_path.write_text(markdown)
    html_path = out / "report.html"
    title = f"hybridmesh bench {results.created_at}"
    html_path.write_text(markdown_to_html(markdown, title=title, base=out))
    return ReportFiles(json_path, csv_path, md_path, html_path, tuple(plots.values()))
