"""dp_l4policy's pure part: a kernel drop record as observe shows it."""

from __future__ import annotations

from pathlib import Path

from hybridmesh.agent.datapath import NodeState, PodView
from hybridmesh.agent.dp_l4policy import drop_event, node_addresses
from hybridmesh.ebpf.l4policy import DropEvent


def _drop(policy: int) -> DropEvent:
    return DropEvent(1_000, "10.0.0.3", 40000, "10.0.0.2", 8080, policy, 300, 400, "new", True)


def test_a_drop_is_a_flow_event_naming_its_policy_at_realtime() -> None:
    event = drop_event(_drop(7), {7: "shop/catalog-allow"}, offset_ns=5_000, node="n1")
    assert (event.kind, event.verdict, event.policy, event.node) == (
        "drop", "DROPPED", "shop/catalog-allow", "n1")
    assert event.time_ns == 6_000
    assert (event.src_ip, event.src_port, event.dst_ip, event.dst_port) == (
        "10.0.0.3", 40000, "10.0.0.2", 8080)


def test_an_unknown_policy_id_is_still_shown_and_no_policy_stays_none() -> None:
    assert drop_event(_drop(9), {}, 0, "n1").policy == "policy#9"
    assert drop_event(_drop(0), {}, 0, "n1").policy is None


def _state(pod_cidr: str | None = None, gateway: str | None = None) -> NodeState:
    remote = PodView("shop", "r", "10.244.3.4", "n2", "sa", "kernel")
    pods = tuple(PodView("shop", f"p{i}", ip, "n1", "sa", "kernel", cgroup=Path(f"/cg/p{i}"))
                 for i, ip in enumerate(("10.244.1.7", "10.244.1.9", "10.244.2.3", "")))
    return NodeState("n1", 1, (*pods, remote), (), (), pod_cidr=pod_cidr, gateway=gateway)


def test_node_addresses_are_the_snapshot_s_gateway() -> None:
    assert node_addresses(_state("10.244.1.0/24", "10.244.1.254")) == ["10.244.1.254"]


def test_without_a_gateway_the_pod_cidr_s_first_host_is_the_bridge() -> None:
    assert node_addresses(_state("10.244.9.0/24")) == ["10.244.9.1"]
    assert node_addresses(_state("not a cidr")) == ["10.244.1.1", "10.244.2.1"]


def test_without_either_the_local_pods_24s_are_guessed() -> None:
    # the remote pod's /24 (10.244.3.0) is not this node's
    assert node_addresses(_state()) == ["10.244.1.1", "10.244.2.1"]
