"""The flow buffer keeps the newest N events numbered; stamping names the pods at each end."""

from __future__ import annotations

import asyncio

import pytest

from hybridmesh.agent.datapath import FlowEvent, NodeState, PodView
from hybridmesh.agent.events import FlowBuffer, stamp


def ev(n: int, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> FlowEvent:
    return FlowEvent(n, "open", src, 1000 + n, dst, 80)


def test_buffer_is_bounded_and_numbered() -> None:
    buf = FlowBuffer(capacity=3)
    assert buf.extend(ev(i) for i in range(5)) == 5
    assert buf.seq == 5 and len(buf) == 3 and buf.dropped == 2
    assert [s for s, _ in buf.last(10)] == [3, 4, 5]
    assert [e.time_ns for _, e in buf.last(2)] == [3, 4]
    assert buf.last(0) == []
    assert [s for s, _ in buf.after(3)] == [4, 5]
    assert [s for s, _ in buf.after(0, limit=1)] == [3]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        FlowBuffer(0)


def test_wait_after_wakes_on_new_events_and_times_out() -> None:
    async def run() -> None:
        buf = FlowBuffer()
        assert await buf.wait_after(0, 0.05) == []
        waiter = asyncio.ensure_future(buf.wait_after(0, 5))  # noqa: TID251
        await asyncio.sleep(0.02)
        assert not waiter.done()
        buf.extend([ev(1)])
        got = await asyncio.wait_for(waiter, 1)
        assert [s for s, _ in got] == [1]

    asyncio.run(run())


def test_stamp_fills_node_and_known_pods_only() -> None:
    state = NodeState("n1", 3, (PodView("shop", "web-0", "10.0.0.2", "n2", "web", "kernel"),),
                      (), ())
    out = stamp(ev(1), state, "n1")
    assert out.node == "n1" and out.dst_pod == "shop/web-0" and out.src_pod is None
    kept = stamp(FlowEvent(1, "drop", "1.1.1.1", 1, "10.0.0.2", 80, node="n9", src_pod="x/y"),
                 state, "n1")
    assert kept.node == "n9" and kept.src_pod == "x/y" and kept.dst_pod == "shop/web-0"
    assert stamp(ev(2), None, "n1").dst_pod is None
