"""Naming rules: prefix everywhere, interface names within IFNAMSIZ, stable and distinct."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.lab import names

dns_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", fullmatch=True)


def test_namespace_and_cgroup_names_follow_the_design() -> None:
    assert names.FABRIC_NETNS == "hm-fabric"
    assert names.node_netns("node-1") == "hm-node-node-1"
    assert names.pod_netns("shop", "web-0") == "hm-pod-shop.web-0"
    assert names.pod_cgroup("shop", "web-0") == "hm-pod-shop.web-0"
    assert names.DAEMON_CGROUP == "hm-daemon"


def test_fixed_interface_names_fit_and_carry_the_prefix() -> None:
    for name in (names.FABRIC_BRIDGE, names.NODE_BRIDGE, names.NODE_UPLINK):
        assert name.startswith("hm-")
        assert len(name) <= names.IFNAME_MAX


@given(dns_label, dns_label)
def test_pod_veth_is_short_prefixed_and_stable(namespace: str, pod: str) -> None:
    veth = names.pod_veth(namespace, pod)
    assert veth.startswith("hm-")
    assert len(veth) == names.IFNAME_MAX
    assert veth == names.pod_veth(namespace, pod)


@given(dns_label)
def test_node_veth_is_short_and_prefixed(node: str) -> None:
    veth = names.node_veth(node)
    assert veth.startswith("hm-") and len(veth) <= names.IFNAME_MAX


def test_veths_of_different_owners_differ() -> None:
    # "a-b"/"c" and "a"/"b-c" give the same netns name but must not share a veth name.
    assert names.pod_veth("a-b", "c") != names.pod_veth("a", "b-c")
    assert names.pod_veth("shop", "web-0") != names.pod_veth("shop", "web-1")
    assert names.node_veth("node-1") != names.pod_veth("node", "1")


def test_has_prefix() -> None:
    assert names.has_prefix("hm-pod-x")
    assert not names.has_prefix("eth0")
    assert not names.has_prefix("hmm")


def test_pod_names_of_different_namespaces_never_collide() -> None:
    assert names.pod_netns("a-b", "c") != names.pod_netns("a", "b-c")
    assert names.pod_cgroup("a-b", "c") != names.pod_cgroup("a", "b-c")
