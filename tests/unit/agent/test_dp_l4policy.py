"""dp_l4policy's pure part: a kernel drop record as observe shows it."""

from __future__ import annotations

from hybridmesh.agent.datapath import PodView
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


def test_node_addresses_are_the_bridge_gateways_of_the_local_pods() -> None:
    pods = tuple(PodView("shop", f"p{i}", ip, "n1", "sa", "kernel")
                 for i, ip in enumerate(("10.244.1.7", "10.244.1.9", "10.244.2.3", "")))
    assert node_addresses(pods) == ["10.244.1.1", "10.244.2.1"]
