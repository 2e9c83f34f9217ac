"""Datapath discovery: dp_*.py modules by file name, selection by env, failures collected."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from hybridmesh.agent.datapath import Datapath, DatapathStatus, NodeState
from hybridmesh.agent.registry import discover, module_names, selected


class Tiny(Datapath):
    name = "tiny"

    def sync(self, state: NodeState) -> None: ...
    def status(self) -> DatapathStatus:
        return DatapathStatus(self.name)
    def close(self) -> None: ...
    def remove(self) -> None: ...


def test_module_names_are_the_dp_files(tmp_path: Path) -> None:
    for name in ("dp_b.py", "dp_a.py", "datapath.py", "_dp_x.py", "dpx.py"):
        (tmp_path / name).write_text("")
    assert module_names(tmp_path) == ["a", "b"]


def test_the_real_package_has_the_socket_lb_datapath() -> None:
    assert "socklb" in module_names()


def test_selection_by_env() -> None:
    assert selected(["a", "b", "c"], None) == ["a", "b", "c"]
    assert selected(["a", "b", "c"], " ") == ["a", "b", "c"]
    assert selected(["a", "b", "c"], "c, dp_a") == ["a", "c"]


def test_broken_modules_are_reported_and_the_rest_created() -> None:
    modules: dict[str, Any] = {
        "hybridmesh.agent.dp_ok": SimpleNamespace(create=lambda node: Tiny()),
        "hybridmesh.agent.dp_wrong": SimpleNamespace(create=lambda node: object()),
        "hybridmesh.agent.dp_raises": SimpleNamespace(create=lambda node: 1 / 0),
    }

    def importer(name: str) -> ModuleType:
        if name not in modules:
            raise ImportError(f"no module {name}")
        return modules[name]  # type: ignore[no-any-return]

    found = discover("n1", ["missing", "ok", "raises", "wrong"], importer)
    assert [n for n, _ in found.datapaths] == ["ok"]
    errors = {b.module: b.error for b in found.broken}
    assert errors["missing"].startswith("ImportError")
    assert errors["raises"].startswith("ZeroDivisionError")
    assert "not a Datapath" in errors["wrong"]
