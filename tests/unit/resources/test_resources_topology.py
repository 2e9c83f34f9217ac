"""Good inputs: the embedded demo, defaults, lookups, merge semantics, serialization."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from hybridmesh.resources import (
    DEFAULT_TOPOLOGY_NAME,
    ResourceError,
    Service,
    Workload,
    build_topology,
    load_default,
    load_documents,
    load_file,
    load_text,
    merge,
)

API = "apiVersion: hybridmesh.io/v1alpha1\n"


def doc(body: str) -> str:
    return API + textwrap.dedent(body)


SHOP = doc("""\
    kind: MeshConfig
    metadata: {name: mesh}
    spec: {defaultPlacement: sidecar}
    ---
    """) + doc("""\
    kind: Workload
    metadata: {name: web, namespace: shop, labels: {app: web, tier: front}}
    spec:
      serviceAccount: web
      replicas: 2
      placement: node
      command: [srv, --port, "{port}", --name, "{pod}.{namespace}@{node}/{pod_ip}", '{"a": 1}']
      env: [{name: MODE, value: fast}]
      ports: [{name: http, containerPort: 8080}, {name: admin, containerPort: 9000}]
      resources:
        limits: {cpu: "1.5", memory: 256Mi}
        requests: {cpu: 250m, memory: "100000000"}
      restartPolicy: OnFailure
    ---
    """) + doc("""\
    kind: Workload
    metadata: {name: api, namespace: shop, labels: {app: api}}
    spec:
      command: [srv]
      ports: [{containerPort: 7070}]
    ---
    """) + doc("""\
    kind: Service
    metadata: {name: web, namespace: shop}
    spec:
      selector: {app: web}
      clusterIP: 10.96.0.42
      ports:
      - {name: http, port: 80, targetPort: http, appProtocol: http}
      - {name: admin, port: 9000}
    ---
    """) + doc("""\
    kind: Service
    metadata: {name: api, namespace: shop}
    spec:
      selector: {app: api}
      ports: [{port: 80, targetPort: 7070}]
    ---
    """) + doc("""\
    kind: AuthorizationPolicy
    metadata: {name: web-allow, namespace: shop}
    spec:
      selector: {matchLabels: {app: web}}
      rules:
      - from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/*"]}}]
        to: [{operation: {methods: [GET], paths: ["/api/*"], ports: ["8080", 9000]}}]
    ---
    """) + doc("""\
    kind: HTTPRoute
    metadata: {name: web-route, namespace: shop}
    spec:
      parentRefs: [{name: web, port: 80}]
      rules:
      - matches: [{path: {type: Exact, value: /v2}, headers: [{name: x-canary, value: "1"}]}]
        backendRefs: [{name: api, weight: 10}, {name: web, port: 80, weight: 90}]
        timeouts: {request: 2s, backendRequest: 500ms}
        retry: {codes: [503], attempts: 3, backoff: 100ms}
      - backendRefs: [{name: web, port: 80}]
    """)


def test_embedded_demo_loads() -> None:
    topology = load_default()
    assert topology.source == DEFAULT_TOPOLOGY_NAME
    assert [n.name for n in topology.nodes] == ["node-1", "node-2"]
    assert [w.name for w in topology.workloads] == [
        "frontend", "catalog", "reviews", "ratings", "loadgen"
    ]
    assert {s.name for s in topology.services} == {"frontend", "catalog", "reviews", "ratings"}
    catalog = topology.service("shop", "catalog")
    workload = topology.workload("shop", "catalog")
    assert catalog is not None and workload is not None
    assert catalog.spec.ports[0].target_port_for(workload) == 8080
    assert workload.spec.resources.limits.cpu_millis == 500
    assert workload.spec.resources.limits.memory_bytes == 128 * 2**20


def test_defaults_when_mesh_and_nodes_are_absent() -> None:
    topology = load_text(doc("""\
        kind: Workload
        metadata: {name: web}
        spec: {command: [srv]}
        """), "d.yaml")
    mesh = topology.mesh.spec
    assert (mesh.trust_domain, mesh.mtls.mode, mesh.default_placement) == (
        "cluster.local", "STRICT", "none"
    )
    assert mesh.certificate_ttl == timedelta(hours=24)
    assert (mesh.service_cidr, mesh.pod_cidr) == ("10.96.0.0/16", "10.244.0.0/16")
    assert [n.name for n in topology.nodes] == ["node-1"]
    assert topology.resources == tuple(topology.workloads)  # defaults are not "given"
    web = topology.workloads[0]
    assert web.namespace == "default"
    spec = web.spec
    assert (spec.service_account, spec.replicas, spec.node, spec.placement) == (
        "default", 1, None, None
    )
    assert (spec.env, spec.ports, spec.restart_policy) == ([], [], "Always")
    assert spec.resources.limits.cpu_millis is None
    assert spec.resources.limits.memory_bytes is None
    assert topology.placement_of(web) == "none"


def test_shop_fields_and_lookups() -> None:
    topology = load_text(SHOP, "shop.yaml")
    web, api = topology.workloads
    assert topology.placement_of(web) == "node"
    assert topology.placement_of(api) == "sidecar"  # the MeshConfig default
    assert web.spec.resources.limits.cpu_millis == 1500
    assert web.spec.resources.requests.memory_bytes == 100_000_000
    assert web.spec.env_dict() == {"MODE": "fast"}
    assert web.spec.render_command(
        {"port": 8080, "pod": "web-0", "namespace": "shop", "node": "node-1", "pod_ip": "10.0.0.2"}
    ) == ["srv", "--port", "8080", "--name", "web-0.shop@node-1/10.0.0.2", '{"a": 1}']
    assert topology.workloads_selected_by("shop", {"app": "web"}) == [web]
    assert topology.workloads_selected_by("shop", {"tier": "front", "app": "web"}) == [web]
    assert topology.workloads_selected_by("other", {"app": "web"}) == []
    web_service, api_service = topology.services
    assert web_service.spec.cluster_ip == "10.96.0.42"
    http, admin = web_service.spec.ports
    assert (http.target_port, http.app_protocol) == ("http", "http")
    assert http.target_port_for(web) == 8080
    assert (admin.target_port, admin.app_protocol) == (9000, None)  # targetPort defaults to port
    assert api_service.spec.ports[0].target_port_for(api) == 7070


def test_policy_and_route_shapes() -> None:
    topology = load_text(SHOP, "shop.yaml")
    (policy,) = topology.authorization_policies
    assert policy.spec.action == "ALLOW"
    assert policy.spec.selector is not None
    assert policy.spec.selector.match_labels == {"app": "web"}
    rule = policy.spec.rules[0]
    assert rule.from_[0].source.principals == ["spiffe://cluster.local/ns/shop/sa/*"]
    assert rule.to[0].operation.ports == ["8080", "9000"]  # ints are normalized to strings
    (route,) = topology.http_routes
    first, second = route.spec.rules
    assert first.matches[0].path.type == "Exact"
    assert first.matches[0].headers[0].type == "Exact"
    assert [(b.name, b.port, b.weight) for b in first.backend_refs] == [
        ("api", None, 10), ("web", 80, 90)
    ]
    assert first.timeouts is not None and first.retry is not None
    assert first.timeouts.request == timedelta(seconds=2)
    assert first.timeouts.backend_request == timedelta(milliseconds=500)
    assert first.retry.backoff == timedelta(milliseconds=100)
    # Gateway API default: a rule without matches matches every path.
    assert (second.matches[0].path.type, second.matches[0].path.value) == ("PathPrefix", "/")


def test_resources_remember_file_and_field_lines() -> None:
    resources = load_documents(SHOP, "shop.yaml")
    web = resources[1]
    assert (web.source, web.line) == ("shop.yaml", 6)
    assert web.line_of("spec", "replicas") == 11
    assert web.line_of("spec", "ports", 1, "containerPort") == 15
    assert web.line_of("spec", "no", "such", "field") == 9  # closest ancestor: spec


def test_round_trip_through_yaml() -> None:
    topology = load_text(SHOP, "shop.yaml")
    again = load_text(topology.to_yaml(), "saved.yaml")
    dump = [r.model_dump() for r in topology.resources]
    assert [r.model_dump() for r in again.resources] == dump
    assert again.resources[1].source == "saved.yaml"


def test_merge_replaces_in_place_and_appends() -> None:
    base = load_documents(SHOP, "shop.yaml")
    overlay = load_documents(doc("""\
        kind: Workload
        metadata: {name: api, namespace: shop, labels: {app: api}}
        spec: {command: [srv2], replicas: 3, ports: [{containerPort: 7070}]}
        ---
        """) + doc("""\
        kind: Node
        metadata: {name: node-9}
        """), "apply.yaml")
    merged = merge(base, overlay)
    assert [r.key for r in merged] == [r.key for r in base] + [("Node", "", "node-9")]
    api = merged[2]
    assert isinstance(api, Workload)
    assert (api.spec.replicas, api.source) == (3, "apply.yaml")
    assert merged[1] is base[1]
    topology = build_topology(merged)
    assert topology.source == "shop.yaml, apply.yaml"
    assert [n.name for n in topology.nodes] == ["node-9"]


def test_merge_errors_point_at_the_file_the_resource_came_from() -> None:
    base = load_documents(SHOP, "shop.yaml")
    overlay = load_documents(doc("""\
        kind: Service
        metadata: {name: api, namespace: shop}
        spec:
          selector: {app: apii}
          ports: [{port: 80}]
        """), "apply.yaml")
    with pytest.raises(ResourceError) as caught:
        build_topology(merge(base, overlay))
    assert str(caught.value) == (
        'apply.yaml:5: Service shop/api: selector {app: apii} matches no Workload in namespace '
        '"shop"; labels there are: app=api, app=web, tier=front'
    )


def test_merge_keeps_repeats_within_overlay_so_validation_reports_them() -> None:
    node = doc("kind: Node\nmetadata: {name: n}\n")
    overlay = load_documents(node + "---\n" + node, "o.yaml")
    merged = merge([], overlay)
    assert len(merged) == 2
    with pytest.raises(ResourceError) as caught:
        build_topology(merged)
    assert str(caught.value) == (
        "o.yaml:7: Node n: already defined at o.yaml:1; rename or remove one of them"
    )


def test_load_file_and_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(SHOP)
    assert load_file(path).source == str(path)
    with pytest.raises(ResourceError) as caught:
        load_file(tmp_path / "missing.yaml")
    assert str(caught.value).endswith("missing.yaml:0: cannot read: No such file or directory")


def test_empty_documents_are_ignored() -> None:
    assert load_documents("---\n# nothing\n---\n\n---\n", "e.yaml") == []


def test_python_construction_by_attribute_name() -> None:
    service = Service.model_validate({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "target_port": 8080}]},
    })
    assert service.spec.ports[0].target_port == 8080
    assert (service.source, service.line) == ("<unknown>", 0)


def test_models_are_frozen() -> None:
    topology = load_default()
    with pytest.raises(ValueError, match="frozen"):
        topology.workloads[0].spec.replicas = 5  # type: ignore[misc]
