"""Shared pieces of the agent unit tests: a two-node topology and its control plane."""

from __future__ import annotations

import pytest

from hybridmesh.control.plane import ControlPlane
from hybridmesh.resources import load_text

TOPO = """
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: n1}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: n2}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  replicas: 2
  node: n2
  serviceAccount: web
  placement: kernel
  command: ["srv"]
  ports: [{containerPort: 8080}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: client, namespace: shop, labels: {app: client}}
spec:
  node: n1
  placement: kernel
  command: ["sleep", "infinity"]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/client"]}}]
"""


@pytest.fixture
def control() -> ControlPlane:
    cp = ControlPlane(load_text(TOPO, "t.yaml"))
    cp.set_ready("shop/web-0", True)
    return cp
