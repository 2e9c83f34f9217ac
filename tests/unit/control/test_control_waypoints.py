"""Which Services get a waypoint, the pods and Services planned for it, and the node-side
policies that admit it (control/waypoints.py)."""

from __future__ import annotations

from typing import Any

from hybridmesh.control.model import WAYPOINT_LABEL
from hybridmesh.control.plane import ControlPlane
from hybridmesh.control.waypoints import needs_l7, node_policies, waypoints
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.policy import RequestAttributes, Target, compile_policies, normalize_path
from hybridmesh.resources import load_text

BASE = """
apiVersion: hybridmesh.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: cluster.local, defaultPlacement: node}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {serviceAccount: web, command: ["sleep", "1"], ports: [{containerPort: 8080}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {serviceAccount: db, command: ["sleep", "1"], ports: [{containerPort: 5432}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: db, namespace: shop}
spec: {selector: {app: db}, ports: [{port: 5432, appProtocol: tcp}]}
"""

DENY_ADMIN = """
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin"]}}]}]
"""

ALLOW_FRONT = """
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: front-only, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules: [{from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/front"]}}]}]
"""

ROUTE = """
---
apiVersion: hybridmesh.io/v1alpha1
kind: HTTPRoute
metadata: {name: web-route, namespace: shop}
spec:
  parentRefs: [{name: web}]
  rules: [{backendRefs: [{name: web}]}]
"""

WAYPOINT = "spiffe://cluster.local/ns/shop/sa/waypoint"


def topo(extra: str = "", base: str = BASE) -> Any:
    return load_text(base + extra, "t.yaml")


def test_l4_only_services_get_no_waypoint() -> None:
    assert waypoints(topo()) == ()
    only_l4 = ALLOW_FRONT  # principals only: the node proxy enforces it at L4
    assert waypoints(topo(only_l4)) == ()


def test_a_path_policy_or_a_route_makes_a_node_service_need_a_waypoint() -> None:
    for extra in (DENY_ADMIN, ROUTE):
        t = topo(extra)
        assert [(w.service_key, w.principal) for w in waypoints(t)] == [("shop/web", WAYPOINT)]
        assert not needs_l7(t, t.service("shop", "db"))


def test_sidecar_services_apply_l7_themselves() -> None:
    sidecar = BASE.replace("defaultPlacement: node", "defaultPlacement: sidecar")
    assert waypoints(topo(DENY_ADMIN, base=sidecar)) == ()


def test_the_plan_has_the_waypoint_pod_and_its_service_and_the_topology_is_unchanged() -> None:
    cp = ControlPlane(topo(DENY_ADMIN))
    pods = {p.key: p for p in cp.plan.pods}
    wp = pods["shop/waypoint-web-0"]
    assert (wp.placement, wp.service_account, wp.labels) == (
        "sidecar", "waypoint", {WAYPOINT_LABEL: "web"})
    svc = next(s for s in cp.plan.services if s.key == "shop/waypoint-web")
    assert [(p.port, p.target_port) for p in svc.ports] == [(15008, 15008)]
    assert svc.selector == {WAYPOINT_LABEL: "web"}
    assert all(w.name != "waypoint-web" for w in cp.topology.workloads)
    # its own snapshot says what it serves; every pod snapshot carries the node addresses
    snap = cp.snapshot(("pod", "shop/waypoint-web-0"))
    assert snap is not None and snap.content["pod"]["labels"] == {WAYPOINT_LABEL: "web"}
    assert [n["name"] for n in snap.content["nodes"]] == [n.name for n in cp.plan.nodes]


def _decide(policies: list[dict[str, Any]], principal: str, path: str | None = None) -> bool:
    target = Target("shop", {"app": "web"}, frozenset({"shop/web"}), None)
    ev = compile_policies(policies, target, trust_domain="cluster.local")
    peer = SpiffeId.parse(principal)
    attrs = RequestAttributes.tcp(peer, 8080) if path is None else RequestAttributes(
        peer, 8080, "GET", normalize_path(path), None)
    return ev.decide(attrs).allowed


def test_node_policies_admit_the_waypoint_and_nobody_else() -> None:
    t = topo(DENY_ADMIN + ALLOW_FRONT)
    cp = ControlPlane(t)
    original = [p.model_dump(mode="json", by_alias=True, exclude_none=True)
                for p in t.authorization_policies]
    node_side = node_policies(t, original)
    assert [p["metadata"]["name"] for p in node_side] == [
        "no-admin", "front-only", "waypoint-web-admit"]
    front = "spiffe://cluster.local/ns/shop/sa/front"
    # as the node proxy sees it (L4): the widened DENY stops everyone but the waypoint
    assert not _decide(original, WAYPOINT)
    assert _decide(node_side, WAYPOINT)
    assert not _decide(node_side, front)  # the L7 DENY still widens for direct callers
    assert not _decide(node_side, "spiffe://cluster.local/ns/shop/sa/other")
    # the node snapshots carry the rewritten policies, pod snapshots the originals
    node = cp.snapshot(("node", cp.plan.nodes[0].name))
    pod = cp.snapshot(("pod", "shop/waypoint-web-0"))
    assert node is not None and pod is not None
    assert node.content["policies"] == node_side
    assert pod.content["policies"] == original


def test_policies_are_untouched_without_waypoints() -> None:
    t = topo(ALLOW_FRONT)
    original = [p.model_dump(mode="json", by_alias=True, exclude_none=True)
                for p in t.authorization_policies]
    assert node_policies(t, original) == original
