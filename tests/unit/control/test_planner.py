"""The planner: addresses are sticky, pods spread over nodes, env is Kubernetes-shaped."""

from __future__ import annotations

import ipaddress

import pytest

from hybridmesh.control.ipam import AddressError
from hybridmesh.control.planner import Planner, diff
from hybridmesh.resources import load_text

HEAD = """
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: n1}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: n2}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def web(replicas: int, command: str = '["srv", "--port", "{port}", "{pod}", "{pod_ip}"]') -> str:
    return f"""
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: web, namespace: shop, labels: {{app: web}}}}
spec:
  replicas: {replicas}
  command: {command}
  ports: [{{name: http, containerPort: 8080}}]
  env: [{{name: MODE, value: fast}}]
"""


def test_pods_spread_over_nodes_with_addresses_in_their_node_cidr() -> None:
    plan = Planner().plan(load_text(HEAD + web(4), "t.yaml"))
    assert [p.name for p in plan.pods] == ["web-0", "web-1", "web-2", "web-3"]
    assert [p.node for p in plan.pods] == ["n1", "n2", "n1", "n2"]
    nodes = {n.name: n for n in plan.nodes}
    for pod in plan.pods:
        assert ipaddress.IPv4Address(pod.ip) in ipaddress.IPv4Network(nodes[pod.node].pod_cidr)
        assert pod.ip != nodes[pod.node].gateway
    assert len({p.ip for p in plan.pods}) == 4


def test_command_placeholders_env_and_named_target_port() -> None:
    plan = Planner().plan(load_text(HEAD + web(1), "t.yaml"))
    pod = plan.pods[0]
    assert pod.command == ("srv", "--port", "8080", "web-0", pod.ip)
    assert pod.env["POD_NAME"] == "web-0"
    assert pod.env["POD_NAMESPACE"] == "shop"
    assert pod.env["POD_IP"] == pod.ip
    assert pod.env["MODE"] == "fast"
    svc = plan.services[0]
    assert pod.env["WEB_SERVICE_HOST"] == svc.cluster_ip
    assert pod.env["WEB_SERVICE_PORT"] == "80"
    assert pod.env["WEB_SERVICE_PORT_HTTP"] == "80"
    assert svc.ports[0].target_port == 8080
    assert svc.cluster_ip == "10.96.0.10"


def test_scaling_keeps_existing_pods_and_addresses() -> None:
    planner = Planner()
    first = planner.plan(load_text(HEAD + web(2), "t.yaml"))
    second = planner.plan(load_text(HEAD + web(4), "t.yaml"))
    assert second.pods[:2] == first.pods[:2]
    change = diff(first, second)
    assert [p.name for p in change.pods_added] == ["web-2", "web-3"]
    assert change.pods_removed == ()
    assert not change.services_changed
    third = planner.plan(load_text(HEAD + web(1), "t.yaml"))
    change = diff(second, third)
    assert [p.name for p in change.pods_removed] == ["web-1", "web-2", "web-3"]
    assert third.pods[0] == first.pods[0]


def test_changed_workload_replaces_its_pods_but_keeps_their_address() -> None:
    planner = Planner()
    first = planner.plan(load_text(HEAD + web(2), "t.yaml"))
    second = planner.plan(load_text(HEAD + web(2, '["other", "{port}"]'), "t.yaml"))
    change = diff(first, second)
    assert {p.name for p in change.pods_removed} == {"web-0", "web-1"}
    assert {p.name for p in change.pods_added} == {"web-0", "web-1"}
    assert [p.ip for p in second.pods] == [p.ip for p in first.pods]
    assert second.pods[0].command == ("other", "8080")


def test_explicit_cluster_ip_already_taken_is_refused_like_kubernetes() -> None:
    planner = Planner()
    extra = """
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  ports: [{port: 81, targetPort: 8080}]
"""
    one = planner.plan(load_text(HEAD + web(1), "t.yaml"))
    assert one.services[0].cluster_ip == "10.96.0.10"
    with pytest.raises(
        AddressError, match=r"clusterIP 10.96.0.10 is already allocated to Service shop/web"
    ):
        planner.plan(load_text(HEAD + web(1) + extra, "t.yaml"))
    two = planner.plan(
        load_text(HEAD + web(1) + extra.replace("10.96.0.10", "10.96.0.50"), "t.yaml")
    )
    assert {s.name: s.cluster_ip for s in two.services} == {
        "web": "10.96.0.10",
        "api": "10.96.0.50",
    }
    assert diff(one, two).services_changed
