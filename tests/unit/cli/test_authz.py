"""`hybridmesh authz check` against a fake lab whose status and snapshots come from a real
ControlPlane (the same JSON the lab daemon serves), so the contract is exercised, not mocked."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from hybridmesh.cli import authz
from hybridmesh.control.plane import ControlPlane
from hybridmesh.resources import load_text

TOPOLOGY = """
apiVersion: hybridmesh.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: example.org}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {serviceAccount: client, command: ["c"], placement: sidecar}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: legacy, namespace: shop, labels: {app: legacy}}
spec: {serviceAccount: legacy, command: ["c"], placement: none}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  serviceAccount: web
  replicas: 2
  command: ["srv"]
  placement: sidecar
  ports: [{name: http, containerPort: 8080}, {name: admin, containerPort: 9090}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {serviceAccount: db, command: ["db"], placement: kernel, ports: [{containerPort: 5432}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: cache, namespace: shop, labels: {app: cache}}
spec: {serviceAccount: cache, command: ["c"], placement: none, ports: [{containerPort: 6379}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: http}
  - {name: admin, port: 9090, targetPort: 9090}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: 5432, appProtocol: tcp}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: cache, namespace: shop}
spec:
  selector: {app: cache}
  ports: [{name: redis, port: 6379, targetPort: 6379, appProtocol: tcp}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: ["spiffe://example.org/ns/shop/sa/client"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/api/*", "/admin"]}}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-deny-admin, namespace: shop}
spec:
  targetRefs: [{name: web}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin"]}}]}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: stores, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{from: [{source: {principals: ["spiffe://example.org/ns/shop/sa/client"]}}]}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: cache-closed, namespace: shop}
spec:
  selector: {matchLabels: {app: cache}}
"""


class FakeLab:
    def __init__(self) -> None:
        self.plane = ControlPlane(load_text(TOPOLOGY, "authz.yaml"))
        for pod in self.plane.plan.pods:
            self.plane.set_ready(pod.key, pod.name != "web-1")
        self.snapshots: list[str] = []

    def status(self) -> dict[str, Any]:
        pods = [{**p.to_json(), "ready": self.plane.is_ready(p.key)} for p in self.plane.plan.pods]
        return {"pods": pods, "services": [s.to_json() for s in self.plane.services()]}

    def snapshot(self, namespace: str, pod: str) -> dict[str, Any]:
        self.snapshots.append(f"{namespace}/{pod}")
        snap = self.plane.snapshot(("pod", f"{namespace}/{pod}"))
        assert snap is not None
        return snap.to_json()


@pytest.fixture
def lab() -> FakeLab:
    return FakeLab()


def _run(lab: FakeLab | None, *args: str) -> Any:
    def sources() -> authz.AuthzSources:
        if lab is None:
            return authz.AuthzSources(status=_no_lab, snapshot=lambda ns, pod: _no_lab())
        return authz.AuthzSources(status=lab.status, snapshot=lab.snapshot)

    app = typer.Typer()
    app.callback()(lambda: None)
    authz.register(app, sources=sources)
    return CliRunner().invoke(app, ["authz", "check", *args])


def _no_lab() -> dict[str, Any]:
    raise authz.NoLab("connection refused")


def _json(lab: FakeLab, *args: str) -> dict[str, Any]:
    result = _run(lab, *args, "-o", "json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_allowed_request_names_the_allow_policy_for_every_endpoint(lab: FakeLab) -> None:
    data = _json(lab, "--from", "client-0", "--to", "web", "--port", "80", "--path", "/api/x")
    assert data["from"] == {
        "pod": "shop/client-0",
        "placement": "sidecar",
        "principal": "spiffe://example.org/ns/shop/sa/client",
    }
    assert data["to"] == {
        "service": "shop/web",
        "port": 80,
        "targetPort": 8080,
        "appProtocol": "http",
    }
    assert data["request"] == {
        "method": "GET",
        "path": "/api/x",
        "host": "web.shop.svc.cluster.local",
    }
    assert [(e["pod"], e["ready"], e["allowed"]) for e in data["endpoints"]] == [
        ("shop/web-0", True, True),
        ("shop/web-1", False, True),
    ]
    decision = data["endpoints"][0]["decision"]
    assert decision == {
        "allowed": True,
        "policy": "shop/web-allow",
        "action": "ALLOW",
        "rule": 0,
        "reason": "ALLOW shop/web-allow rule 0 matches",
    }


def test_deny_wins_and_the_table_says_which_policy(lab: FakeLab) -> None:
    result = _run(
        lab,
        "--from",
        "shop/client-0",
        "--to",
        "web.shop",
        "--port",
        "http",
        "--path",
        "/public/../admin",
    )
    assert result.exit_code == 0, result.output
    assert "GET /admin (host web.shop.svc.cluster.local)" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "shop/web-" in line.split()[0]]
    assert len(rows) == 2
    assert all("DENY      shop/web-deny-admin" in row for row in rows)
    assert "ALLOW" not in result.stdout


def test_a_bad_path_is_the_400_the_proxy_answers(lab: FakeLab) -> None:
    data = _json(
        lab, "--from", "client-0", "--to", "shop/web", "--port", "80", "--path", "/api/..%2Fadmin"
    )
    assert "escaped slashes" in data["request"]["rejected"]
    assert all(not e["allowed"] and e["decision"] is None for e in data["endpoints"])
    table = _run(lab, "--from", "client-0", "--to", "web", "--port", "80", "--path", "/a%00")
    assert "400" in table.stdout and "NUL" in table.stdout


def test_an_unmeshed_source_is_plaintext_and_default_denied(lab: FakeLab) -> None:
    data = _json(lab, "--from", "legacy-0", "--to", "web", "--port", "80", "--path", "/api/x")
    assert data["from"]["principal"] is None
    assert data["mtlsMode"] == "STRICT"
    endpoint = data["endpoints"][0]
    assert not endpoint["allowed"] and "default-deny" in endpoint["reason"]


def test_tcp_port_checks_the_connection_and_kernel_placement_is_l4(lab: FakeLab) -> None:
    data = _json(lab, "--from", "client-0", "--to", "db")
    assert data["request"] is None
    (endpoint,) = data["endpoints"]
    assert (endpoint["enforcement"], endpoint["allowed"]) == ("l4", True)
    assert endpoint["reason"].startswith("L4 only")
    assert not _json(lab, "--from", "legacy-0", "--to", "db")["endpoints"][0]["allowed"]


def test_http_flags_on_a_tcp_port_are_an_error(lab: FakeLab) -> None:
    result = _run(lab, "--from", "client-0", "--to", "db", "--path", "/x")
    assert result.exit_code == 2
    assert "appProtocol tcp" in result.output


def test_an_unset_app_protocol_is_checked_as_tcp_unless_http_is_asked(lab: FakeLab) -> None:
    tcp = _json(lab, "--from", "client-0", "--to", "web", "--port", "9090")
    assert tcp["request"] is None
    assert not tcp["endpoints"][0]["allowed"]  # web-allow needs methods/paths: never on TCP
    http = _json(lab, "--from", "client-0", "--to", "web", "--port", "9090", "--path", "/api/")
    assert http["request"]["path"] == "/api/" and http["endpoints"][0]["allowed"]


def test_unenforced_destinations_say_so(lab: FakeLab) -> None:
    (endpoint,) = _json(lab, "--from", "client-0", "--to", "cache")["endpoints"]
    assert endpoint["allowed"] and endpoint["enforcement"] == "none"
    assert endpoint["decision"]["allowed"] is False
    assert endpoint["reason"].startswith("not enforced (placement none")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "nope", "--to", "web"], "no pod 'nope'"),
        (["--from", "client-0", "--to", "nope"], "no Service shop/nope"),
        (["--from", "client-0", "--to", "web"], "choose one with --port"),
        (["--from", "client-0", "--to", "web", "--port", "81"], "no port '81'"),
    ],
)
def test_bad_questions_exit_2_with_a_hint(lab: FakeLab, args: list[str], message: str) -> None:
    result = _run(lab, *args)
    assert result.exit_code == 2
    assert message in result.output


def test_no_lab(lab: FakeLab) -> None:
    result = _run(None, "--from", "client-0", "--to", "web")
    assert result.exit_code == 1
    assert "no lab is running" in result.output and "lab up" in result.output


def test_policies_come_from_the_source_pods_snapshot(lab: FakeLab) -> None:
    _json(lab, "--from", "client-0", "--to", "db")
    assert lab.snapshots == ["shop/client-0"]
