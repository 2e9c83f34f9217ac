"""HTTPRoutes compile to the proxy-facing JSON with refs, ports and durations resolved."""

from __future__ import annotations

from hybridmesh.control.plane import ControlPlane
from hybridmesh.resources import load_text

TOPO = """
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web, track: stable}}
spec: {command: ["srv"], ports: [{containerPort: 8080}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: web-canary, namespace: shop, labels: {app: web, track: canary}}
spec: {command: ["srv"], ports: [{containerPort: 8080}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web-canary, namespace: shop}
spec: {selector: {track: canary}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: HTTPRoute
metadata: {name: split, namespace: shop}
spec:
  parentRefs: [{name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: X-Canary, value: "1"}]}]
    backendRefs: [{name: web-canary, port: 80}]
    timeouts: {request: 2s, backendRequest: 500ms}
    retry: {codes: [503], attempts: 3, backoff: 50ms}
  - backendRefs: [{name: web, port: 80, weight: 90}, {name: web-canary, port: 80, weight: 10}]
"""


def test_routes_are_compiled_into_every_pod_snapshot() -> None:
    cp = ControlPlane(load_text(TOPO, "t.yaml"))
    snap = cp.snapshot(("pod", "shop/web-0"))
    assert snap is not None
    (route,) = snap.content["routes"]
    assert route["name"] == "shop/split"
    assert route["service"] == "shop/web"
    assert route["port"] == 80
    first, second = route["rules"]
    assert first["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/api"},
            "headers": [{"type": "Exact", "name": "x-canary", "value": "1"}],
            "method": None,
        }
    ]
    assert first["backends"] == [{"service": "shop/web-canary", "port": 80, "weight": 1}]
    assert first["timeouts"] == {"requestMs": 2000, "backendRequestMs": 500}
    assert first["retry"] == {"codes": [503], "attempts": 3, "backoffMs": 50}
    assert [b["weight"] for b in second["backends"]] == [90, 10]
    assert second["matches"][0]["path"] == {"type": "PathPrefix", "value": "/"}
    assert second["retry"] is None
