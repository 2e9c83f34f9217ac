"""observe end to end against fake agents on real unix sockets: --last merging, filters, -f,
-o json, bad lines, and the errors when no agent answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import typer
from observe_fake_agent import FakeAgent
from typer.testing import CliRunner

from hybridmesh import env
from hybridmesh.agent.datapath import FlowEvent
from hybridmesh.cli import observe as observe_cli
from hybridmesh.cli._observe_client import AgentError, AgentFlows, Follower, merge_last
from hybridmesh.cli._observe_format import format_time

runner = CliRunner()


def flow(t: int, src: str = "shop/web-0", port: int = 5432, node: str = "n1") -> dict[str, object]:
    return FlowEvent(time_ns=t * 10**9, kind="open", src_ip="10.0.0.1", src_port=40000 + t,
                     dst_ip="10.0.0.2", dst_port=port, src_pod=src, dst_pod="shop/db-0",
                     node=node).to_json()  # fmt: skip


@pytest.fixture
def agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, FakeAgent]]:
    monkeypatch.setattr(env, "STATE_DIR", tmp_path)
    (tmp_path / "agents").mkdir()
    made = {n: FakeAgent(tmp_path / "agents" / f"{n}.sock") for n in ("n1", "n2")}
    try:
        yield made
    finally:
        for agent in made.values():
            agent.close()


def app() -> typer.Typer:
    root = typer.Typer()
    observe_cli.register(root)
    root.command("noop")(lambda: None)  # a second command: typer then needs the name
    return root


def run(*args: str) -> tuple[int, list[str], str]:
    result = runner.invoke(app(), ["observe", *args])
    return result.exit_code, result.stdout.splitlines(), result.stderr


def test_last_merges_nodes_in_time_order(agents: dict[str, FakeAgent]) -> None:
    agents["n1"].push(flow(1), flow(3), flow(5))
    agents["n2"].push(flow(2, node="n2"), flow(4, node="n2"))
    code, lines, _ = run("--last", "4", "-o", "json")
    assert code == 0
    assert [json.loads(line)["time"] // 10**9 for line in lines] == [2, 3, 4, 5]
    assert agents["n1"].requests == ["/v1/flows?last=4"]  # no filter: only what is shown


def test_filters_fetch_a_window_and_apply_here(agents: dict[str, FakeAgent]) -> None:
    agents["n1"].push(flow(1, port=80), flow(2), flow(3, port=80), flow(4, src="shop/other"))
    code, lines, _ = run("--last", "5", "--port", "80", "--from-pod", "web-0")
    assert code == 0
    assert [line[:19] for line in lines] == [format_time(t * 10**9) for t in (1, 3)]
    assert all("shop/web-0:" in line and "shop/db-0:80" in line for line in lines)
    assert agents["n1"].requests == [f"/v1/flows?last={observe_cli.FILTER_WINDOW}"]


def test_default_last_is_20(agents: dict[str, FakeAgent]) -> None:
    agents["n1"].push(*(flow(t) for t in range(30)))
    code, lines, _ = run()
    assert code == 0 and len(lines) == 20
    assert lines[-1].startswith(format_time(29 * 10**9))


def test_bad_lines_are_skipped_with_a_warning(agents: dict[str, FakeAgent]) -> None:
    agents["n1"].push(flow(1), "not json", json.dumps({"kind": "open"}), flow(2))
    code, lines, err = run("-o", "json")
    assert code == 0 and len(lines) == 2
    assert "node n1: skipped 2 lines that were not flows" in err


def test_bad_filter_fails_with_a_hint(agents: dict[str, FakeAgent]) -> None:
    code, lines, err = run("--pod", "a/b/c")
    assert code != 0 and lines == []
    assert "pod 'a/b/c' is not [namespace/]name" in err and "hint:" in err


def test_no_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env, "STATE_DIR", tmp_path)
    code, _, err = run()
    assert code != 0
    assert "no node agent is running" in err and "hybridmesh lab up" in err


def test_a_dead_agent_is_a_warning_while_another_answers(agents: dict[str, FakeAgent]) -> None:
    agents["n2"].close()
    (env.STATE_DIR / "agents" / "n2.sock").touch()  # a stale socket file: nothing listens
    agents["n1"].push(flow(1))
    code, lines, err = run()
    assert code == 0 and len(lines) == 1
    assert "agent of node n2" in err


def test_follow_prints_new_flows_of_every_node(agents: dict[str, FakeAgent]) -> None:
    agents["n1"].push(flow(1))
    source = AgentFlows(env.STATE_DIR / "agents")
    batches = [source.last(n, 0) for n in source.nodes()]
    assert merge_last(batches, 0, lambda e: True) == []
    follower = Follower(source, wait=2.0)
    follower.start({b.node: b.seq for b in batches})
    agents["n2"].push(flow(7, node="n2"))
    agents["n1"].push(flow(8))
    seen: list[FlowEvent] = []
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        item = follower.queue.get(timeout=5)
        assert not isinstance(item, AgentError)
        seen += item.events
    follower.stop()
    assert sorted(e.time_ns // 10**9 for e in seen) == [7, 8]  # flow 1 was before the cursor


def test_follow_command_ends_when_every_agent_is_gone(agents: dict[str, FakeAgent]) -> None:
    agents["n1"].push(flow(1))

    def later() -> None:
        time.sleep(0.3)
        agents["n1"].push(flow(2))
        time.sleep(0.3)
        for agent in agents.values():
            agent.close()

    threading.Thread(target=later, daemon=True).start()
    code, lines, err = run("-f", "--last", "1")
    assert [line[:19] for line in lines] == [format_time(t * 10**9) for t in (1, 2)]
    assert code != 0 and "every node agent went away" in err


def test_time_is_local_by_default() -> None:
    assert format_time(0) == f"{datetime.fromtimestamp(0):%b %d %H:%M:%S}.000"
