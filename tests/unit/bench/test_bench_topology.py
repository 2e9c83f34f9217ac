"""The bench lab topology: one namespace per contender, same pods in each, valid for the lab."""

from __future__ import annotations

import pytest

from hybridmesh.bench.scenarios import CONTENDERS
from hybridmesh.bench.topology import client_pod, namespace_of, render_topology
from hybridmesh.resources import build_topology, load_documents


def test_every_contender_gets_the_same_pods_in_its_own_namespace() -> None:
    text = render_topology(list(CONTENDERS.values()))
    topo = build_topology(load_documents(text, "bench.yaml"))
    by_ns: dict[str, set[str]] = {}
    for w in topo.workloads:
        by_ns.setdefault(w.metadata.namespace, set()).add(w.metadata.name)
    assert by_ns == {
        namespace_of(c): {"http", "tcp", "client-same", "client-cross"} for c in CONTENDERS
    }
    placements = {(w.metadata.namespace, w.spec.placement) for w in topo.workloads}
    assert ("bench-sidecar", "sidecar") in placements
    assert ("bench-envoy-sidecar", "none") in placements  # Envoy is injected by the bench


def test_servers_on_node_1_and_the_cross_node_client_elsewhere() -> None:
    topo = build_topology(load_documents(render_topology([CONTENDERS["none"]]), "b.yaml"))
    nodes = {w.metadata.name: w.spec.node for w in topo.workloads}
    assert nodes == {
        "http": "node-1",
        "tcp": "node-1",
        "client-same": "node-1",
        "client-cross": "node-2",
    }


def test_client_pods_per_variant() -> None:
    assert client_pod("none", "same-node").key == "bench-none/client-same-0"
    assert client_pod("envoy-sidecar", "cross-node").key == "bench-envoy-sidecar/client-cross-0"
    with pytest.raises(ValueError):
        client_pod("none", "other-node")
