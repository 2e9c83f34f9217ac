"""`hybridmesh validate`: exit codes, problem listing, summary, JSON shape."""

from __future__ import annotations

import json
import shutil
from importlib import resources as importlib_resources
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hybridmesh.cli import validate

BAD = """\
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  command: [srv]
  replica: 2
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: webb}
  ports: [{port: 80}]
"""


@pytest.fixture
def app() -> typer.Typer:
    """Only the validate command, so these tests do not depend on other command modules."""
    root = typer.Typer()

    @root.callback()
    def _group() -> None:
        """Force a command group, as the real root app is."""

    validate.register(root)
    return root


@pytest.fixture
def demo_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.yaml"
    source = importlib_resources.files("hybridmesh.resources") / "topologies" / "demo.yaml"
    with importlib_resources.as_file(source) as original:
        shutil.copy(original, path)
    return path


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


def test_valid_file_prints_summary(app: typer.Typer, demo_file: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(demo_file)])
    assert result.exit_code == 0, result.output
    assert f"valid: {demo_file} (1 MeshConfig, 2 Node, 5 Workload, 4 Service)" in result.stdout
    assert "shop/frontend" in result.stdout
    assert "8 pods on 2 nodes (node-1, node-2)" in result.stdout


def test_valid_file_json(app: typer.Typer, demo_file: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(demo_file), "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["valid"] is True
    assert data["problems"] == []
    summary = data["summary"]
    assert summary["kinds"] == {"MeshConfig": 1, "Node": 2, "Workload": 5, "Service": 4}
    assert summary["placements"] == {"none": 5}
    assert summary["pods"] == 8
    assert summary["workloads"][0] == {"name": "shop/frontend", "replicas": 2, "placement": "none"}


def test_invalid_file_lists_every_problem(app: typer.Typer, bad_file: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(bad_file)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f'{bad_file}:6: Workload shop/web: unknown field "replica" in spec; did you mean '
        '"replicas"?',
        f"invalid: 1 problem in {bad_file}",
    ]


def test_invalid_file_json(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD.replace("  replica: 2\n", ""))
    result = CliRunner().invoke(app, ["validate", str(path), "-o", "json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "valid": False,
        "problems": [{
            "file": str(path),
            "line": 11,
            "message": 'Service shop/web: selector {app: webb} matches no Workload in namespace '
            '"shop"; labels there are: app=web',
        }],
        "summary": None,
    }


def test_missing_file_is_a_clear_error(app: typer.Typer, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(app, ["validate", str(missing)])
    assert result.exit_code == 2
    assert f"error: {missing} does not exist" in result.stderr
    assert "hint:" in result.stderr
    assert result.stdout == ""


def test_directory_is_a_clear_error(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 2
    assert f"error: {tmp_path} is a directory" in result.stderr


def test_standard_input(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["validate", "-"], input=BAD)
    assert result.exit_code == 1
    assert result.stdout.startswith("<stdin>:6: Workload shop/web: unknown field")
