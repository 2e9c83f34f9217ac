"""Mixing placements with ``node`` pods (issue 6 point 6), the table in docs/node.md §4.

The demo in ``node`` placement plus one ``sidecar`` pod (node-1) and one ``kernel`` pod
(node-2), mesh mTLS STRICT:

- node -> sidecar: HBONE as the source pod (STRICT accepts it, the sidecar's request metrics
  name the node pod's principal, a DENY of ``/admin`` for that principal answers 403 naming
  the policy while ``/`` passes, a DENY naming that principal refuses it);
- node -> kernel: plain TCP from the source pod's own address (a kernel DENY naming the node
  pod's principal drops it while another node pod passes: the kernel judged the real pod);
- kernel/sidecar -> node: plaintext straight to the pod, judged by the node pod's L4 rules in
  the kernel (a DENY naming the kernel pod drops it while the sidecar pod passes).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

import pytest
from hmcli import HM, hm

from hybridmesh.lab.demo import with_placement

pytestmark = [pytest.mark.privileged, pytest.mark.slow, pytest.mark.timeout(300)]

MIX = """
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: sc, namespace: shop, labels: {app: sc}}
spec:
  serviceAccount: sc
  node: node-1
  placement: sidecar
  command: ["python3", "-m", "hybridmesh.lab.workloads.httpsvc", "--port", "{port}"]
  ports: [{name: http, containerPort: 8080}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: sc, namespace: shop}
spec:
  selector: {app: sc}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: kn, namespace: shop, labels: {app: kn}}
spec:
  serviceAccount: kn
  node: node-2
  placement: kernel
  command: ["python3", "-m", "hybridmesh.lab.workloads.httpsvc", "--port", "{port}"]
  ports: [{name: http, containerPort: 8080}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: kn, namespace: shop}
spec:
  selector: {app: kn}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
"""

GET = """
import json, socket, sys
out = {}
for host in sys.argv[1:]:
    try:
        s = socket.create_connection((host, 80), timeout=4)
        s.settimeout(4)
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        out[host] = data.split(b"\\r\\n", 1)[0].decode() or "closed"
    except OSError as exc:
        out[host] = type(exc).__name__
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def mixed_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    hm("lab", "down")
    demo = files("hybridmesh.resources.topologies").joinpath("demo.yaml").read_text()
    tmp = tmp_path_factory.mktemp("mix")
    (tmp / "node.yaml").write_text(with_placement(demo, "node"))
    (tmp / "mix.yaml").write_text(MIX)
    try:
        hm("lab", "up", str(tmp / "node.yaml"), "-o", "json")
        hm("lab", "apply", str(tmp / "mix.yaml"))
        yield json.loads(hm("lab", "status", "-o", "json").stdout)
    finally:
        hm("lab", "down")


def get(pod: str, *hosts: str) -> dict[str, str]:
    result: dict[str, str] = json.loads(
        hm("lab", "exec", pod, "--", "python3", "-c", GET, *hosts).stdout
    )
    return result


TD = "spiffe://cluster.local/ns/shop/sa"
DENIES = """
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: sc-no-frontend, namespace: shop}
spec:
  selector: {matchLabels: {app: sc}}
  action: DENY
  rules: [{from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/frontend"]}}]}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: kn-no-frontend, namespace: shop}
spec:
  selector: {matchLabels: {app: kn}}
  action: DENY
  rules: [{from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/frontend"]}}]}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog-no-kn, namespace: shop}
spec:
  selector: {matchLabels: {app: catalog}}
  action: DENY
  rules: [{from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/kn"]}}]}]
"""
OK = "HTTP/1.1 200 OK"


def test_node_pods_reach_sidecar_and_kernel_pods_and_are_reached_by_them(
    mixed_lab: dict[str, Any],
) -> None:
    pods = {p["name"]: p for p in mixed_lab["pods"]}
    assert (pods["sc-0"]["placement"], pods["kn-0"]["placement"]) == ("sidecar", "kernel")
    assert all(p["ready"] for p in pods.values())
    for caller in ("frontend-0", "frontend-1"):  # node-1 (sc's node) and node-2 (kn's node)
        assert get(f"shop/{caller}", "sc", "kn") == {"sc": OK, "kn": OK}
    for caller in ("sc-0", "kn-0"):  # into node pods
        assert get(f"shop/{caller}", "catalog", "frontend") == {"catalog": OK, "frontend": OK}
    # the sidecar saw the node pod's SVID (mTLS as the source pod), not an anonymous peer
    metrics = _sidecar_metrics(pods["sc-0"]["ip"])
    assert f'source_principal="{TD}/frontend"' in metrics, metrics[-2000:]
    # the pods of the other placements are unaffected: no node proxy serves them
    served = {p for n in ("node-1", "node-2") for p in _served(n)}
    assert "shop/sc-0" not in served and "shop/kn-0" not in served and "shop/catalog-0" in served


TRAFFIC = """
import socket, sys, time
end, done = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    with socket.create_connection((sys.argv[1], 80), timeout=4) as s:
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        while s.recv(65536):
            pass
    done += 1
    time.sleep(0.02)
print(done)
"""


def test_stat_shows_node_placement_edges_from_the_node_proxies(
    mixed_lab: dict[str, Any],
) -> None:
    """Fresh connections from frontend-1 (node-2) to catalog and to the sidecar pod during the
    window: the node proxies' L4 signals give the rows (connections/s, success, latency)."""
    assert mixed_lab["pods"]
    loops = [subprocess.Popen([*HM, "lab", "exec", "shop/frontend-1", "--", "python3", "-c",
                               TRAFFIC, host, "14"], stdout=subprocess.PIPE, text=True)
             for host in ("catalog", "sc")]
    try:
        time.sleep(1.5)  # both loops running before the windows open
        inbound = json.loads(hm("stat", "-w", "2", "-o", "json").stdout)
        edges = json.loads(hm("stat", "--from", "deploy/frontend", "-w", "2", "-o", "json").stdout)
    finally:
        made = [int(loop.communicate(timeout=60)[0] or 0) for loop in loops]
    assert all(n > 10 for n in made), made
    assert inbound["scrapeErrors"] == [], inbound
    catalog = next(r for r in inbound["rows"] if r["name"] == "catalog")
    assert catalog["unit"] == "connections" and catalog["rps"] > 1, catalog
    assert catalog["successRate"] == 1.0 and catalog["latencyMs"]["p50"] is not None, catalog
    rows = {r["name"]: r for r in edges["rows"]}
    assert {"catalog", "sc"} <= set(rows), rows
    for name in ("catalog", "sc"):  # the caller's node proxy reports both edges
        assert rows[name]["unit"] == "connections" and rows[name]["rps"] > 1, rows[name]
        assert rows[name]["successRate"] == 1.0, rows[name]


# one request per "host/path"; prints {spec: [status, body head]}
PATHS = """
import json, socket, sys
out = {}
for spec in sys.argv[1:]:
    host, _, path = spec.partition("/")
    try:
        s = socket.create_connection((host, 80), timeout=4)
        s.settimeout(4)
        s.sendall(f"GET /{path} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        head, _, body = data.partition(b"\\r\\n\\r\\n")
        out[spec] = [int(head.split()[1]) if head else 0, body[:300].decode(errors="replace")]
    except OSError as exc:
        out[spec] = [0, type(exc).__name__]
print(json.dumps(out))
"""
SC_NO_ADMIN = """
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: sc-no-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: sc}}
  action: DENY
  rules:
  - from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/frontend"]}}]
    to: [{operation: {paths: ["/admin"]}}]
"""


def paths(pod: str, *specs: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = json.loads(
        hm("lab", "exec", pod, "--", "python3", "-c", PATHS, *specs).stdout)
    return out


def _apply(text: str) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        hm("lab", "apply", f.name)


def test_node_to_sidecar_is_hbone_so_the_sidecars_l7_policy_applies(
    mixed_lab: dict[str, Any],
) -> None:
    """The node proxy opens an HBONE stream to the sidecar as the node pod: the sidecar
    detects HTTP, judges paths for that principal (403 naming the policy, not a closed
    connection) and counts requests, not only bytes, for the node pod's principal."""
    pods = {p["name"]: p for p in mixed_lab["pods"]}
    before = _sidecar_metrics(pods["sc-0"]["ip"])
    _apply(SC_NO_ADMIN)
    deadline = time.monotonic() + 15
    while True:  # the sidecar's snapshot carries the new policy
        seen = paths("shop/frontend-1", "sc/", "sc/admin")
        if seen["sc/admin"][0] == 403 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen["sc/"][0] == 200, seen
    assert seen["sc/admin"][0] == 403 and "shop/sc-no-admin" in seen["sc/admin"][1], seen
    assert paths("shop/loadgen-0", "sc/admin")["sc/admin"][0] == 200  # another principal
    after = _sidecar_metrics(pods["sc-0"]["ip"])
    frontend = {"reporter": "destination", "source_principal": f"{TD}/frontend"}
    assert _count(after, "request_total", **frontend) >= \
        _count(before, "request_total", **frontend) + 2, after[-3000:]
    assert _count(after, "request_total", response_code="403", **frontend) >= 1, after[-3000:]


def _count(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_policies_judge_the_real_caller_in_every_direction(mixed_lab: dict[str, Any]) -> None:
    assert mixed_lab["pods"]
    _apply(DENIES)
    time.sleep(1.0)  # snapshots to the sidecar, the node proxies and the agents' maps
    for caller in ("frontend-0", "frontend-1"):
        seen = get(f"shop/{caller}", "sc", "kn")
        assert seen["sc"] != OK, seen  # the sidecar's policy saw frontend's principal
        assert seen["kn"] != OK, seen  # the kernel saw frontend's address, not the node's
    assert get("shop/loadgen-0", "sc", "kn") == {"sc": OK, "kn": OK}  # others still pass
    # plaintext into a node pod: the kernel judges the caller's identity
    assert get("shop/kn-0", "catalog")["catalog"] != OK
    assert get("shop/sc-0", "catalog") == {"catalog": OK}


def _sidecar_metrics(ip: str) -> str:
    out = hm("lab", "exec", "shop/loadgen-0", "--", "curl", "-s", "--max-time", "3",
             f"http://{ip}:15020/metrics").stdout
    return str(out)


def _served(node: str) -> list[str]:
    from hybridmesh.lab import _sh, names

    out = _sh.run(
        _sh.in_netns(
            names.node_netns(node),
            ["curl", "-s", "--max-time", "3", "http://127.0.0.1:15020/config_dump"],
        )
    )
    served: list[str] = json.loads(out)["served"]
    return served
