"""Node snapshot → NodeState: every pod (local ones with their paths), services, policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hybridmesh.agent.state import PodPaths, SnapshotError, build_state, pod_paths
from hybridmesh.control.plane import ControlPlane

V2 = Path("/sys/fs/cgroup/unified")


def node_doc(cp: ControlPlane, node: str) -> dict[str, Any]:
    snap = cp.snapshot(("node", node))
    assert snap is not None
    return snap.to_json()


def test_local_pods_get_cgroup_and_netns_remote_ones_do_not(control: ControlPlane) -> None:
    built = build_state(node_doc(control, "n1"), "n1", V2, present=lambda _p: True)
    by_key = {p.key: p for p in built.state.pods}
    assert set(by_key) == {"shop/web-0", "shop/web-1", "shop/client-0"}
    client = by_key["shop/client-0"]
    assert client.local and client.placement == "kernel"
    assert client.cgroup == V2 / "hm-lab" / "hm-pod-shop.client-0"
    assert client.netns == Path("/run/netns/hm-pod-shop.client-0")
    web = by_key["shop/web-0"]
    assert not web.local and web.node == "n2" and web.labels == {"app": "web"}
    assert web.service_account == "web" and web.ready
    assert not by_key["shop/web-1"].ready
    assert [p.key for p in built.state.local("kernel")] == ["shop/client-0"]
    assert built.pending == ()


def test_a_local_pod_without_its_cgroup_yet_is_pending_not_local(control: ControlPlane) -> None:
    built = build_state(node_doc(control, "n1"), "n1", V2, present=lambda _p: False)
    assert built.pending == ("shop/client-0",)
    assert built.state.local() == ()


def test_services_endpoints_and_policies_are_typed(control: ControlPlane) -> None:
    doc = node_doc(control, "n2")
    state = build_state(doc, "n2", V2, present=lambda _p: True).state
    assert state.version == doc["version"] and state.node == "n2"
    (svc,) = state.services
    assert svc.key == "shop/web" and svc.ports[0].port == 80 and svc.ports[0].target_port == 8080
    assert [e.pod for e in svc.endpoints] == ["web-0"]
    (policy,) = state.policies
    assert policy.metadata.name == "web-allow" and policy.spec.action == "ALLOW"
    assert state.pod_by_ip(svc.endpoints[0].ip) is not None


def test_the_node_s_cidr_and_bridge_gateway_come_from_the_plan(control: ControlPlane) -> None:
    state = build_state(node_doc(control, "n2"), "n2", V2, present=lambda _p: True).state
    (node,) = [n for n in control.plan.nodes if n.name == "n2"]
    assert state.pod_cidr == node.pod_cidr and state.gateway == node.gateway
    assert state.gateway is not None and state.gateway.startswith(state.pod_cidr.rsplit(".", 1)[0])


def test_node_snapshots_list_every_node_s_tunnel_address(control: ControlPlane) -> None:
    doc = node_doc(control, "n1")
    assert {n["name"]: n["fabricIP"] for n in doc["nodes"]} == {
        n.name: n.fabric_ip for n in control.plan.nodes
    }
    assert len(doc["nodes"]) == 2


def test_pod_paths_follow_lab_names() -> None:
    assert pod_paths(V2, "a", "b-0", Path("/x")) == PodPaths(
        V2 / "hm-lab" / "hm-pod-a.b-0", Path("/x/hm-pod-a.b-0")
    )


@pytest.mark.parametrize(
    "doc",
    [{}, {"version": "x"}, {"version": 1, "pods": [{"name": "a"}]},
     {"version": 1, "policies": [{"spec": 3}]}, {"version": 1, "services": [{"ports": 3}]}],
)
def test_malformed_snapshots_raise_snapshot_error(doc: dict[str, Any]) -> None:
    with pytest.raises(SnapshotError):
        build_state(doc, "n1", V2, present=lambda _p: True)
