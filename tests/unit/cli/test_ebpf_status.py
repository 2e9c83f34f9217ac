"""`hybridmesh ebpf status` rendering and `-o json`, against canned agent answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from hybridmesh.agent import client as agents
from hybridmesh.cli import app
from hybridmesh.cli.ebpf import render_status

NODE: dict[str, Any] = {
    "node": "node-1",
    "datapaths": [
        {
            "name": "sock-lb",
            "programs": [
                {"name": "hm_connect4", "attach": "cgroup/connect4 on 3 cgroups", "id": 41,
                 "runCount": 200, "runTimeNs": 50_000},
                {"name": "hm_getpeername4", "attach": "cgroup/getpeername4 on 3 cgroups",
                 "id": 42, "runCount": 0, "runTimeNs": 0},
            ],
            "maps": [{"name": "services", "kind": "hash", "entries": 4, "maxEntries": 4096},
                     {"name": "stats", "kind": "percpu_array", "entries": None,
                      "maxEntries": 4096}],
            "detail": {}, "sync": {"ok": True, "errors": 0, "lastError": ""},
        },
        {"name": "l4policy", "programs": [], "maps": [], "detail": {},
         "sync": {"ok": False, "errors": 3, "lastError": "BpfError: map full"}},
        {"name": "flows", "programs": [], "maps": [], "detail": {}, "error": "ImportError: x"},
    ],
}  # fmt: skip


def render(nodes: list[dict[str, Any]]) -> str:
    console = Console(width=200, record=True)
    render_status(nodes, console)
    return console.export_text()


def test_table_shows_programs_runs_and_ns_per_run_and_map_fill() -> None:
    text = render([NODE])
    row = next(line for line in text.splitlines() if "hm_connect4" in line)
    assert "cgroup/connect4 on 3 cgroups" in row and "41" in row and "200" in row
    assert row.rstrip(" │").endswith("250")  # 50 000 ns / 200 runs
    idle = next(line for line in text.splitlines() if "hm_getpeername4" in line)
    assert idle.rstrip(" │").endswith("-")
    assert "4/4096" in text and "-/4096" in text
    assert "failing (3)" in text and "BpfError: map full" in text
    assert "ImportError: x" in text


def test_an_unreachable_agent_is_a_line_not_a_traceback() -> None:
    text = render([{"node": "node-2", "error": "agent of node node-2: no socket", "datapaths": []}])
    assert "node node-2: agent of node node-2: no socket" in text


@pytest.fixture
def fake_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents, "known_nodes", lambda: ["node-1", "node-2"])

    def status(node: str, timeout: float = 10.0) -> dict[str, Any]:
        if node == "node-2":
            raise agents.AgentUnavailable("agent of node node-2: nothing is listening")
        return NODE

    monkeypatch.setattr(agents, "status", status)


def test_json_output_and_exit_code(fake_agents: None) -> None:
    result = CliRunner().invoke(app, ["ebpf", "status", "-o", "json"])
    doc = json.loads(result.stdout)
    assert [n["node"] for n in doc["nodes"]] == ["node-1", "node-2"]
    assert doc["nodes"][1]["error"].endswith("nothing is listening")
    assert result.exit_code == 1  # one node did not answer
    ok = CliRunner().invoke(app, ["ebpf", "status", "--node", "node-1", "-o", "json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["nodes"][0]["node"] == "node-1"


def test_no_lab_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents, "known_nodes", lambda: [])
    result = CliRunner().invoke(app, ["ebpf", "status"])
    assert result.exit_code == 1
    assert "no node agent is running" in result.output
