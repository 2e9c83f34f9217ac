"""Versioned snapshots and the long-poll watch: wake exactly the subscribers whose view changed."""

from __future__ import annotations

import asyncio

import pytest

from hybridmesh.control.plane import ControlPlane
from hybridmesh.resources import load_documents, load_text

TOPO = """
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: n1}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  replicas: 2
  node: n1
  command: ["srv"]
  ports: [{containerPort: 8080}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def plane() -> ControlPlane:
    return ControlPlane(load_text(TOPO, "t.yaml"))


def test_endpoints_are_the_ready_pods_only() -> None:
    cp = plane()
    assert cp.services()[0].endpoints == ()
    cp.set_ready("shop/web-1", True)
    eps = cp.services()[0].endpoints
    assert [e.pod for e in eps] == ["web-1"]
    assert eps[0].ip == cp.plan.pod("shop/web-1").ip  # type: ignore[union-attr]
    cp.set_ready("shop/web-1", False)
    assert cp.services()[0].endpoints == ()


def test_version_bumps_only_for_changed_snapshots() -> None:
    cp = plane()
    v_pod = cp.snapshot(("pod", "shop/web-0")).version  # type: ignore[union-attr]
    cp.set_ready("shop/web-0", False)  # no change: no new version anywhere
    assert cp.snapshot(("pod", "shop/web-0")).version == v_pod  # type: ignore[union-attr]
    cp.set_ready("shop/web-0", True)
    snap = cp.snapshot(("pod", "shop/web-0"))
    assert snap is not None and snap.version > v_pod
    assert snap.content["services"][0]["endpoints"][0]["pod"] == "web-0"
    node = cp.snapshot(("node", "n1"))
    assert node is not None
    assert [p["ready"] for p in node.content["pods"]] == [True, False]


def test_pod_snapshots_name_every_pod_ip_for_source_labels() -> None:
    cp = plane()
    snap = cp.snapshot(("pod", "shop/web-0"))
    assert snap is not None
    ips = {p.ip for p in cp.plan.pods}
    assert {p["ip"] for p in snap.content["peers"]} == ips and len(ips) == 2
    assert {(p["workload"], p["namespace"]) for p in snap.content["peers"]} == {("web", "shop")}


def test_watch_blocks_until_change_and_times_out_unchanged() -> None:
    async def run() -> None:
        cp = plane()
        v = cp.snapshot(("pod", "shop/web-0")).version  # type: ignore[union-attr]
        unchanged = await cp.watch(("pod", "shop/web-0"), v, timeout=0.05)
        assert unchanged is not None and unchanged.version == v
        waiter = asyncio.get_running_loop().create_task(cp.watch(("pod", "shop/web-0"), v, 5))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        cp.set_ready("shop/web-1", True)
        snap = await asyncio.wait_for(waiter, 1)
        assert snap is not None and snap.version > v

    asyncio.run(run())


def test_watch_of_a_deleted_pod_returns_none() -> None:
    async def run() -> None:
        cp = plane()
        scaled = TOPO.replace("replicas: 2", "replicas: 1")
        waiter = asyncio.get_running_loop().create_task(cp.watch(("pod", "shop/web-1"), 10**6, 5))
        await asyncio.sleep(0.02)
        cp.apply(load_documents(scaled, "t.yaml"))
        assert await asyncio.wait_for(waiter, 1) is None

    asyncio.run(run())


@pytest.mark.parametrize("ready", [True, False])
def test_apply_removing_a_pod_drops_its_readiness(ready: bool) -> None:
    cp = plane()
    cp.set_ready("shop/web-1", ready)
    cp.apply(load_documents(TOPO.replace("replicas: 2", "replicas: 1"), "t.yaml"))
    assert not cp.is_ready("shop/web-1")
    assert all(e.pod != "web-1" for e in cp.services()[0].endpoints)
