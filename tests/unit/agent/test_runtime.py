"""The agent against a real control-plane API (unix socket) with fake datapaths.

Checks the contract the lab and the other datapaths rely on: every datapath is synced with the
node's state; one that fails is counted and retried without stopping the others; a pod counts
as programmed only when every datapath synced it; flow events come back stamped with pods.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hybridmesh._http import HttpClient, HttpServer, Router
from hybridmesh.agent.api import build_router
from hybridmesh.agent.datapath import Datapath, DatapathStatus, FlowEvent, NodeState
from hybridmesh.agent.registry import Broken, Discovered
from hybridmesh.agent.runtime import Agent, AgentConfig
from hybridmesh.control.api import register_routes
from hybridmesh.control.plane import ControlPlane

pytestmark = pytest.mark.timeout(20)


class FakeDatapath(Datapath):
    def __init__(self, name: str, fail_times: int = 0) -> None:
        self.name = name
        self.states: list[NodeState] = []
        self.fail_times = fail_times
        self.events: list[FlowEvent] = []
        self.closed = False

    def sync(self, state: NodeState) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("map full")
        self.states.append(state)

    def status(self) -> DatapathStatus:
        return DatapathStatus(self.name, detail={"syncs": len(self.states)})

    def drain_events(self) -> list[FlowEvent]:
        out, self.events = self.events, []
        return out

    def close(self) -> None:
        self.closed = True

    def remove(self) -> None:
        self.closed = True


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Harness:
    def __init__(self, agent: Agent, client: HttpClient, control: ControlPlane) -> None:
        self.agent, self.client, self.control = agent, client, control

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        resp = await self.client.request("GET", path, timeout=10)
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.body


def run_with(
    control: ControlPlane, tmp_path: Path, datapaths: list[Datapath],
    body: Callable[[Harness], object], broken: tuple[Broken, ...] = (),
) -> None:  # fmt: skip
    async def main() -> None:
        router = Router()
        register_routes(router, control)
        cp_server = HttpServer(router)
        await cp_server.start_unix(tmp_path / "control.sock")
        v2 = tmp_path / "cg"
        (v2 / "hm-lab" / "hm-pod-shop.client-0").mkdir(parents=True)
        config = AgentConfig("n1", tmp_path / "control.sock", v2, netns_dir=tmp_path)
        found = Discovered(tuple((d.name, d) for d in datapaths), broken)
        agent = Agent(config, found)
        (tmp_path / "hm-pod-shop.client-0").touch()
        await agent.start()
        api = HttpServer(build_router(agent))
        await api.start_unix(tmp_path / "agent.sock")
        client = HttpClient(unix_path=str(tmp_path / "agent.sock"))
        try:
            result = body(Harness(agent, client, control))
            if asyncio.iscoroutine(result):
                await result
        finally:
            await client.close()
            await api.close(1)
            await agent.stop()
            await cp_server.close(1)

    asyncio.run(main())


def test_syncs_every_datapath_and_programs_local_pods(control: ControlPlane,
                                                     tmp_path: Path) -> None:
    a, b = FakeDatapath("a"), FakeDatapath("b")

    async def body(h: Harness) -> None:
        await until(lambda: bool(a.states and b.states))
        state = a.states[-1]
        assert [p.key for p in state.local()] == ["shop/client-0"]
        status, _, raw = await h.get("/v1/pods/shop/client-0?wait=2")
        verdict = json.loads(raw)
        assert status == 200 and verdict["programmed"] is True, verdict
        status, _, raw = await h.get("/v1/pods/shop/web-0")  # on n2: never ours
        assert json.loads(raw)["programmed"] is False
        # a readiness change elsewhere reaches the datapaths as a new state
        before = len(a.states)
        h.control.set_ready("shop/web-1", True)
        await until(lambda: len(a.states) > before)
        assert len(a.states[-1].services[0].endpoints) == 2

    run_with(control, tmp_path, [a, b], body)
    assert a.closed and b.closed


def test_a_failing_datapath_is_retried_and_does_not_stop_others(control: ControlPlane,
                                                                tmp_path: Path) -> None:
    good, flaky = FakeDatapath("good"), FakeDatapath("flaky", fail_times=2)

    async def body(h: Harness) -> None:
        await until(lambda: bool(good.states))
        _, _, raw = await h.get("/v1/status")
        doc = json.loads(raw)
        assert doc["node"] == "n1"
        by_name = {d["name"]: d for d in doc["datapaths"]}
        assert by_name["broken"]["error"] == "ImportError: boom"
        await until(lambda: bool(flaky.states), timeout=8)  # retried with back-off
        doc = json.loads((await h.get("/v1/status"))[2])
        flaky_doc = next(d for d in doc["datapaths"] if d["name"] == "flaky")
        assert flaky_doc["sync"]["errors"] == 2 and flaky_doc["sync"]["ok"] is True
        assert "map full" in flaky_doc["sync"]["lastError"]

    broken = (Broken("broken", "ImportError: boom"),)
    run_with(control, tmp_path, [good, flaky], body, broken=broken)


def test_pod_is_not_programmed_while_a_datapath_fails(control: ControlPlane,
                                                     tmp_path: Path) -> None:
    bad = FakeDatapath("bad", fail_times=10**6)

    async def body(h: Harness) -> None:
        await until(lambda: h.agent.state is not None)
        verdict = json.loads((await h.get("/v1/pods/shop/client-0?wait=0.3"))[2])
        assert verdict["programmed"] is False and verdict["waitingFor"] == ["bad"]

    run_with(control, tmp_path, [bad], body)


def test_a_pod_waits_only_for_datapaths_that_serve_it_and_gate(control: ControlPlane,
                                                                tmp_path: Path) -> None:
    """client-0 is a `kernel` pod: a broken sidecar-only feature and a broken observability
    feature must not hold its app back; a broken kernel feature must."""
    other = FakeDatapath("sidecar-only", fail_times=10**6)
    other.placements = frozenset({"sidecar+ebpf"})
    watcher = FakeDatapath("observability", fail_times=10**6)
    watcher.gates_pods = False
    enforcer = FakeDatapath("enforcer", fail_times=10**6)
    enforcer.placements = frozenset({"kernel"})

    async def body(h: Harness) -> None:
        await until(lambda: h.agent.state is not None)
        verdict = json.loads((await h.get("/v1/pods/shop/client-0?wait=0.3"))[2])
        assert verdict["programmed"] is False and verdict["waitingFor"] == ["enforcer"]
        enforcer.fail_times = 0
        h.agent.request_sync()
        verdict = json.loads((await h.get("/v1/pods/shop/client-0?wait=8"))[2])
        assert verdict["programmed"] is True, verdict

    run_with(control, tmp_path, [other, watcher, enforcer], body)


def test_flows_are_stamped_and_followed(control: ControlPlane, tmp_path: Path) -> None:
    dp = FakeDatapath("flows")

    async def body(h: Harness) -> None:
        await until(lambda: h.agent.state is not None)
        ips = {p.key: p.ip for p in h.agent.state.pods}  # type: ignore[union-attr]
        dp.events.append(FlowEvent(1, "open", ips["shop/client-0"], 40000, ips["shop/web-0"], 8080))
        await until(lambda: h.agent.flows.seq == 1)
        _, headers, raw = await h.get("/v1/flows?last=10")
        (line,) = raw.splitlines()
        flow = json.loads(line)
        assert flow["source"]["pod"] == "shop/client-0"
        assert flow["destination"]["pod"] == "shop/web-0" and flow["node"] == "n1"
        assert headers["x-hm-seq"] == "1"
        waiter = asyncio.ensure_future(h.get("/v1/flows?follow=1&after=1&timeout=5"))  # noqa: TID251
        await asyncio.sleep(0.2)
        assert not waiter.done()
        dp.events.append(FlowEvent(2, "close", "10.9.9.9", 1, ips["shop/web-0"], 8080))
        _, headers, raw = await waiter
        flow = json.loads(raw)
        assert flow["kind"] == "close" and flow["source"]["pod"] is None
        assert headers["x-hm-seq"] == "2"
        # a cursor from a previous agent (higher than ours) gets everything we have
        _, _, raw = await h.get("/v1/flows?follow=1&after=99&timeout=1")
        assert len(raw.splitlines()) == 2

    run_with(control, tmp_path, [dp], body)
