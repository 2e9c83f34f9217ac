"""Nodes and pods from netns + veth + bridges: reachability, idempotency, routes, timing."""

from __future__ import annotations

import time

import pytest
from minilab import MiniLab, echo_from, make_nodes, make_pod

from hybridmesh.lab import _sh, cleanup, network
from hybridmesh.lab.cgroups import detect_layout
from hybridmesh.lab.names import NODE_UPLINK, node_netns, pod_veth

pytestmark = pytest.mark.privileged


def ifindex(netns: str, link: str) -> int:
    return int(_sh.ip_json(netns, "link", "show", "dev", link)[0]["ifindex"])


def test_two_nodes_and_eight_pods_come_up_fast(clean_lab: None) -> None:
    nodes = make_nodes(2)
    start = time.perf_counter()
    network.create_fabric()
    for node in nodes:
        network.create_node(node)
    network.sync_node_routes(nodes)
    for i in range(8):
        network.create_pod(make_pod(f"web-{i}", nodes[i % 2], 10 + i), nodes[i % 2])
    elapsed = time.perf_counter() - start
    sweep = cleanup.sweep()
    print(f"\ncreate 2 nodes + 8 pods: {elapsed * 1e3:.0f} ms; sweep: {sweep.seconds * 1e3:.0f} ms")
    assert sweep.netns == 11 and not sweep.errors
    assert elapsed < 3.0


def test_nothing_is_created_in_the_root_netns(mini_lab: MiniLab) -> None:
    assert not [link for link in _sh.ip_json(None, "link", "show")
                if str(link["ifname"]).startswith("hm-")]


def test_pods_reach_each_other_across_and_within_nodes(mini_lab: MiniLab) -> None:
    client = mini_lab.pods["client-0"]  # on n1
    for target in ("web-1", "web-2"):  # n2, n1
        mini_lab.start_echo(target)
        name, peer = echo_from(mini_lab.netns("client-0"), mini_lab.pods[target].ip)
        assert (name, peer) == (target, client.ip)  # no NAT on the way: source preserved


def test_nodes_reach_pods_on_other_nodes(mini_lab: MiniLab) -> None:
    mini_lab.start_echo("web-1")
    name, peer = echo_from(node_netns("n1"), mini_lab.pods["web-1"].ip)
    assert name == "web-1" and peer == "172.31.255.1"


def test_running_up_again_leaves_live_links_alone(mini_lab: MiniLab) -> None:
    pod = mini_lab.pods["web-0"]
    before = ifindex(mini_lab.netns("web-0"), "eth0")
    network.create_fabric()
    network.create_node(mini_lab.node("n1"))
    network.create_pod(pod, mini_lab.node("n1"))
    assert ifindex(mini_lab.netns("web-0"), "eth0") == before
    mini_lab.start_echo("web-0")
    assert echo_from(mini_lab.netns("client-1"), pod.ip)[0] == "web-0"


def test_a_half_made_pod_is_completed(fabric: MiniLab) -> None:
    n1 = fabric.node("n1")
    pod = make_pod("web-0", n1, 10)
    _sh.ip(None, "netns", "add", fabric.netns("web-0"))  # as if killed right after this step
    fabric.add_pod(pod)
    fabric.add_pod(make_pod("client-0", fabric.node("n2"), 100))
    fabric.start_echo("web-0")
    assert echo_from(fabric.netns("client-0"), pod.ip)[0] == "web-0"


def test_routes_follow_nodes_joining_and_leaving(fabric: MiniLab) -> None:
    three = make_nodes(3)
    network.create_node(three[2])
    network.sync_node_routes(three)
    routes = {r["dst"]: r["gateway"] for r in _sh.ip_json(node_netns("n1"), "route", "show",
                                                        "dev", NODE_UPLINK) if "gateway" in r}
    assert routes == {"10.244.2.0/24": "172.31.255.2", "10.244.3.0/24": "172.31.255.3"}
    network.delete_node("n3")
    network.sync_node_routes(three[:2])
    remaining = {r["dst"] for r in _sh.ip_json(node_netns("n1"), "route", "show", "dev",
                                               NODE_UPLINK) if "gateway" in r}
    assert remaining == {"10.244.2.0/24"}
    assert not _sh.netns_exists(node_netns("n3"))


def test_delete_pod_removes_its_netns_and_node_side_veth(mini_lab: MiniLab) -> None:
    network.delete_pod("shop", "web-0")
    assert not _sh.netns_exists(mini_lab.netns("web-0"))
    links = {str(link["ifname"]) for link in _sh.ip_json(node_netns("n1"), "link", "show")}
    assert pod_veth("shop", "web-0") not in links
    assert pod_veth("shop", "web-2") in links
    network.delete_pod("shop", "web-0")  # already gone: fine


def test_pod_on_a_missing_node_is_a_clear_error(clean_lab: None) -> None:
    node = make_nodes(1)[0]
    with pytest.raises(network.LabError, match="node n1"):
        network.create_pod(make_pod("web-0", node, 10), node)
    assert detect_layout().v2.is_dir()
