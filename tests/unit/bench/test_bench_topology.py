"""The bench lab topology: one namespace per contender, same pods in each, valid for the lab."""

from __future__ import annotations

import pytest

from hybridmesh.bench.scenarios import CONTENDERS
from hybridmesh.bench.topology import (
    client_pod,
    namespace_of,
    render_topology,
    scale_overlay,
    server_pod,
)
from hybridmesh.resources import build_topology, load_documents
from hybridmesh.resources.topology import merge


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
    assert ("bench-sidecar-ebpf", "sidecar+ebpf") in placements  # a DNS label for the name


def test_scenario_pods_only_when_their_scenario_runs() -> None:
    text = render_topology([CONTENDERS["none"]], ["grpc", "upgrade"])
    topo = build_topology(load_documents(text, "b.yaml"))
    names = {w.metadata.name for w in topo.workloads}
    assert {"grpc", "blast-a", "blast-b"} <= names
    protocols = {s.metadata.name: s.spec.ports[0].app_protocol for s in topo.services}
    assert protocols["grpc"] == "grpc" and protocols["blast-a"] == "http"
    assert server_pod("none", "grpc").key == "bench-none/grpc-0"
    assert server_pod("none", "tcp-rr").key == "bench-none/tcp-0"


def test_scale_overlay_sets_the_replicas_of_every_contender() -> None:
    contenders = [CONTENDERS["none"], CONTENDERS["sidecar"]]
    base = load_documents(render_topology(contenders), "b.yaml")
    merged = merge(base, load_documents(scale_overlay(contenders, 8), "scale.yaml"))
    topo = build_topology(merged)
    scale = {w.metadata.namespace: w.spec.replicas for w in topo.workloads
             if w.metadata.name == "scale"}  # fmt: skip
    assert scale == {"bench-none": 8, "bench-sidecar": 8}
    assert {w.spec.node for w in topo.workloads if w.metadata.name == "scale"} == {"node-1"}
    with pytest.raises(ValueError):
        scale_overlay(contenders, 0)


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


def test_only_the_plaintext_sidecar_opts_out_of_identity() -> None:
    from hybridmesh.bench.scenarios import CONTENDERS
    from hybridmesh.resources import load_text

    chosen = [CONTENDERS[n] for n in ("none", "sidecar", "sidecar-plaintext")]
    topo = load_text(render_topology(chosen, ["grpc", "blast-radius"]), "bench.yaml")
    opted_out = {(w.namespace, w.name) for w in topo.workloads if w.identity_disabled}
    plaintext = {(w.namespace, w.name) for w in topo.workloads
                 if w.namespace == "bench-sidecar-plaintext"}  # fmt: skip
    assert opted_out == plaintext
    assert len(plaintext) == 7  # http, tcp, two clients, grpc, blast-a, blast-b
    assert all(w.spec.placement == "sidecar" for w in topo.workloads if w.namespace in
               {"bench-sidecar", "bench-sidecar-plaintext"})  # fmt: skip
