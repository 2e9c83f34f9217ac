"""Node snapshots as tables, and destination-side decisions by the verified source identity."""

from __future__ import annotations

from typing import Any

import pytest

from hybridmesh.agent.nodeproxy.inbound import authorize_stream
from hybridmesh.agent.nodeproxy.outbound import decide_local
from hybridmesh.agent.nodeproxy.testing import node_pod, node_snapshot
from hybridmesh.agent.nodeproxy.tunnel import TunnelRequestError
from hybridmesh.agent.nodeproxy.view import ViewError, build_view
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.proxy.testing import endpoint, service

CLIENT = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/client")
OTHER = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/other")
FOREIGN = SpiffeId.parse("spiffe://evil.example/ns/default/sa/client")
PODS = [node_pod("web-0", "10.244.2.7", node="n2"), node_pod("side-0", "10.244.2.8", node="n2",
                                                            placement="sidecar")]


def allow_client(ports: list[str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"from": [{"source": {"principals": [str(CLIENT)]}}]}
    if ports:
        rule["to"] = [{"operation": {"ports": ports}}]
    return {"apiVersion": "hybridmesh.io/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "action": "ALLOW",
                     "rules": [rule]}}


def view(policies: list[dict[str, Any]] = ()) -> Any:  # type: ignore[assignment]
    svc = service("web", "10.96.0.10", [(80, 8080)],
                  [endpoint("web-0", "10.244.2.7", placement="node", service_account="web",
                            node="n2")])
    return build_view({"version": 3, **node_snapshot("n2", PODS, [svc], policies=policies,
                                                     nodes={"n1": "172.31.255.1"})})


def test_tables() -> None:
    v = view()
    assert [p.key for p in v.served()] == ["default/web-0"]
    assert set(v.local_by_ip) == {"10.244.2.7"}
    service_key, [dest] = v.destinations("10.96.0.10", 80)
    assert (service_key, dest.ip, dest.port, dest.pod and dest.pod.node) == (
        "default/web", "10.244.2.7", 8080, "n2")
    assert v.destinations("1.2.3.4", 443)[1][0].pod is None
    assert v.identities_on("n2") == {SpiffeId.parse("spiffe://cluster.local/ns/default/sa/web")}
    assert v.nodes == {"n1": "172.31.255.1"}


def test_allow_policy_admits_only_the_named_identity_and_port() -> None:
    v = view([allow_client(["8080"])])
    assert authorize_stream(v, CLIENT, b"10.244.2.7:8080")[1] == 8080
    for peer, authority in ((OTHER, b"10.244.2.7:8080"), (CLIENT, b"10.244.2.7:9090"),
                            (FOREIGN, b"10.244.2.7:8080"), (None, b"10.244.2.7:8080")):
        with pytest.raises(TunnelRequestError) as info:
            authorize_stream(v, peer, authority)
        assert info.value.reason == "policy"


def test_tunnel_reaches_only_node_pods_of_this_node() -> None:
    v = view()
    for authority in (b"10.244.2.8:80", b"10.244.1.5:80", b"127.0.0.1:15020"):
        with pytest.raises(TunnelRequestError) as info:
            authorize_stream(v, CLIENT, authority)
        assert info.value.reason == "not-local"


def test_same_node_decision_uses_the_same_policies() -> None:
    v = view([allow_client()])
    web = v.pods["default/web-0"]
    assert decide_local(v, CLIENT, web, 8080) is None
    assert "default-deny" in (decide_local(v, OTHER, web, 8080) or "")


def test_invalid_policy_rejects_the_snapshot() -> None:
    bad = allow_client()
    bad["spec"]["action"] = "MAYBE"
    with pytest.raises(ViewError, match="policies"):
        view([bad])


def test_the_control_planes_unscoped_snapshot_keeps_only_this_nodes_pods_local() -> None:
    """The node snapshot lists every pod of the mesh; another node's pods are not served
    (no SVID asked for them) nor delivered locally (they go through the tunnel)."""
    everyone = [*PODS, node_pod("far-0", "10.244.1.9", node="n1")]
    got = build_view({"version": 1, **node_snapshot("n2", everyone, [])})
    assert sorted(got.pods) == ["default/side-0", "default/web-0"]
    assert [p.key for p in got.served()] == ["default/web-0"]
    assert "10.244.1.9" not in got.local_by_ip


def test_a_tunnel_client_is_labelled_as_the_workload_running_as_its_identity() -> None:
    """stat's destination-side rows must name the caller as its source side does (the
    workload), not by its service account, wherever in the mesh the caller runs."""
    pods = [node_pod("api-0", "10.244.1.4", node="n1", service_account="client"),
            node_pod("api-1", "10.244.2.4", node="n2", service_account="client"),
            node_pod("a-0", "10.244.1.5", node="n1", service_account="shared"),
            node_pod("b-0", "10.244.1.6", node="n1", service_account="shared"),
            *PODS]
    view = build_view(node_snapshot("n2", pods))
    assert view.peer_of(CLIENT) == ("api", "default", str(CLIENT))  # another node's pod too
    assert view.peer_of(CLIENT) is view.peer_of(CLIENT)  # one Peer per identity and view
    shared = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/shared")
    assert view.peer_of(shared).workload == "shared"  # a and b: the account, not a guess
    assert view.peer_of(OTHER).workload == "other"  # no pod runs as it: the account
    assert view.peer_of(None) == ("unknown", "unknown", "unknown")
