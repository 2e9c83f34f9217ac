"""HBONE from sidecars and L7 waypoints for ``node`` pods (issue 6 point 3), through the CLI.

Two nodes, mTLS STRICT, ``node`` placement by default: ``front`` (node-1) calls ``web`` (two
versions, both nodes) which has an HTTPRoute (header ``x-version: v2`` → web-v2, else
web-v1) and a DENY on ``/admin`` (``targetRefs: web``), so the control plane gives it a
waypoint; ``db`` and ``api`` are L4-only. One ``sidecar`` pod (``sc``) calls node pods through
their node proxies as itself (HBONE), so ``db``'s DENY of its principal holds, and calls ``web``
through its waypoint (HBONE as itself, CONNECT to the cluster IP), so ``/admin`` gets the
waypoint's 403. Killing the
waypoint's proxy only hurts ``web``. Runs as root in a sandbox; never skips.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hmcli import HM, hm

from hybridmesh.lab import _sh, names

pytestmark = [pytest.mark.privileged, pytest.mark.slow, pytest.mark.timeout(600)]

TD = "spiffe://cluster.local/ns/shop/sa"
HTTPSVC = '["python3", "-m", "hybridmesh.lab.workloads.httpsvc", "--port", "{port}"'


def _workload(name: str, node: str, sa: str, labels: str, size: int, *,
              placement: str = "node") -> str:
    return f"""
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: {name}, namespace: shop, labels: {labels}}}
spec:
  serviceAccount: {sa}
  node: {node}
  placement: {placement}
  command: {HTTPSVC}, "--response-size", "{size}"]
  ports: [{{name: http, containerPort: 8080}}]"""


def _service(name: str, selector: str) -> str:
    return f"""
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {selector}
  ports: [{{name: http, port: 80, targetPort: 8080, appProtocol: http}}]"""


TOPOLOGY = """
apiVersion: hybridmesh.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: cluster.local, mtls: {mode: STRICT}, defaultPlacement: node}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: node-1}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: node-2}""" + "".join((
    _workload("front", "node-1", "front", "{app: front}", 5),
    _workload("sc", "node-1", "sc", "{app: sc}", 6, placement="sidecar"),
    _workload("web-v1", "node-2", "web", "{app: web, version: v1}", 11),
    _workload("web-v2", "node-1", "web", "{app: web, version: v2}", 22),
    _workload("db", "node-2", "db", "{app: db}", 33),
    _workload("api", "node-2", "api", "{app: api}", 44),
    _service("web", "{app: web}"),
    _service("web-v1", "{app: web, version: v1}"),
    _service("web-v2", "{app: web, version: v2}"),
    _service("db", "{app: db}"),
    _service("api", "{app: api}"),
)) + """
---
apiVersion: hybridmesh.io/v1alpha1
kind: HTTPRoute
metadata: {name: web-split, namespace: shop}
spec:
  parentRefs: [{name: web}]
  rules:
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: web-v2}]
  - backendRefs: [{name: web-v1}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-no-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: web}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin"]}}]}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-no-sc, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules: [{from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/sc"]}}]}]
"""

# one request per argument: "host[:port]/path[|header: value]"; prints [{status, size, body}]
CALL = """
import json, socket, sys, time
out = []
for spec in sys.argv[1:]:
    target, _, header = spec.partition("|")
    host, _, path = target.partition("/")
    extra = header + "\\r\\n" if header else ""
    try:
        s = socket.create_connection((host, 80), timeout=5)
        s.settimeout(5)
        head = f"GET /{path} HTTP/1.1\\r\\nHost: {host}\\r\\n{extra}"
        s.sendall((head + "Connection: close\\r\\n\\r\\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        head, _, body = data.partition(b"\\r\\n\\r\\n")
        out.append({"status": int(head.split()[1]) if head else 0, "size": len(body),
                    "body": body[:300].decode(errors="replace")})
    except OSError as exc:
        out.append({"status": 0, "error": repr(exc)})
print(json.dumps(out))
"""

# alternate web and db every 20 ms for argv[1] seconds; prints [[t, web status, db status]]
ALTERNATE = """
import json, socket, sys, time
def status(host):
    try:
        s = socket.create_connection((host, 80), timeout=2)
        s.settimeout(2)
        s.sendall(f"GET / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        return int(data.split()[1]) if data else 0
    except (OSError, IndexError, ValueError):
        return 0
print("go", flush=True)
start, out = time.monotonic(), []
while time.monotonic() - start < float(sys.argv[1]):
    out.append([round(time.monotonic() - start, 3), status("web"), status("db")])
    time.sleep(0.02)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    hm("lab", "down")
    topo = tmp_path_factory.mktemp("waypoints") / "waypoints.yaml"
    topo.write_text(TOPOLOGY)
    try:
        yield json.loads(hm("lab", "up", str(topo), "-o", "json").stdout)
    finally:
        hm("lab", "down")


def call(pod: str, *specs: str) -> list[dict[str, Any]]:
    out = hm("lab", "exec", pod, "--", "python3", "-c", CALL, *specs).stdout
    result: list[dict[str, Any]] = json.loads(out)
    return result


def scrape(netns: str, ip: str) -> str:
    argv = ["curl", "-s", "--max-time", "3", f"http://{ip}:15020/metrics"]
    return str(_sh.run(_sh.in_netns(netns, argv)))


def counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def pods_of(lab: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in lab["pods"]}


def waypoint_metrics(lab: dict[str, Any]) -> str:
    wp = pods_of(lab)["waypoint-web-0"]
    return scrape(names.node_netns(wp["node"]), wp["ip"])


def test_only_the_l7_service_gets_a_waypoint(lab: dict[str, Any]) -> None:
    pods = pods_of(lab)
    assert lab["phase"] == "Ready" and all(p["ready"] for p in pods.values()), lab
    waypoints = sorted(n for n in pods if n.startswith("waypoint-"))
    assert waypoints == ["waypoint-web-0"]
    wp = pods["waypoint-web-0"]
    assert (wp["placement"], wp["serviceAccount"]) == ("sidecar", "waypoint")


def test_sidecar_reaches_node_pods_as_itself_and_their_policy_holds(lab: dict[str, Any]) -> None:
    api, db = call("shop/sc-0", "api/", "db/")
    assert api["status"] == 200 and api["size"] == 44, api
    assert db["status"] == 403, db  # db-no-sc, enforced by node-2's proxy on sc's identity
    # node-2's proxy saw the sidecar's own principal, over the tunnel (not plaintext)
    text = scrape(names.node_netns("node-2"), "127.0.0.1")
    assert counter(text, "tcp_open_total", source_principal=f"{TD}/sc") >= 1, text
    # an allowed caller still reaches db
    assert call("shop/front-0", "db/")[0]["status"] == 200


def test_requests_follow_the_route_through_the_waypoint(lab: dict[str, Any]) -> None:
    answers = call("shop/front-0", "web/", "web/|x-version: v2", "web/a", "web/a|x-version: v2")
    assert [(a["status"], a["size"]) for a in answers] == [(200, 11), (200, 22)] * 2, answers
    text = waypoint_metrics(lab)
    assert counter(text, "request_total", reporter="waypoint",
                   source_principal=f"{TD}/front") >= 4, text


def test_the_waypoint_denies_admin_naming_the_policy(lab: dict[str, Any]) -> None:
    admin, other = call("shop/front-0", "web/admin", "web/other")
    assert admin["status"] == 403 and "shop/web-no-admin" in admin["body"], admin
    assert other["status"] == 200, other


def test_a_sidecar_sends_the_waypointed_service_through_the_waypoint(
        lab: dict[str, Any]) -> None:
    """Istio's rule: the sidecar does not balance ``web`` itself (node-2's proxy would judge
    the L7 DENY at L4 and refuse everything): the waypoint judges sc's identity per request."""
    before = waypoint_metrics(lab)
    root, admin, v2 = call("shop/sc-0", "web/", "web/admin", "web/|x-version: v2")
    assert (root["status"], root["size"]) == (200, 11), root  # the waypoint's route: v1
    assert admin["status"] == 403 and "shop/web-no-admin" in admin["body"], admin
    assert (v2["status"], v2["size"]) == (200, 22), v2
    after = waypoint_metrics(lab)
    sc = {"reporter": "waypoint", "source_principal": f"{TD}/sc"}
    assert counter(after, "request_total", **sc) == counter(before, "request_total", **sc) + 3


def test_l4_only_traffic_never_passes_the_waypoint(lab: dict[str, Any]) -> None:
    before = waypoint_metrics(lab)
    answers = call("shop/front-0", "db/", "api/", "db/")
    assert [a["status"] for a in answers] == [200] * 3, answers
    after = waypoint_metrics(lab)
    for service in ("db", "api"):
        fqdn = f"{service}.shop.svc.cluster.local"
        assert counter(after, "request_total", destination_service=fqdn) == 0, after
    assert counter(after, "request_total") == counter(before, "request_total")


def test_killing_the_waypoint_hurts_only_its_service(lab: dict[str, Any]) -> None:
    wp = pods_of(json.loads(hm("lab", "status", "-o", "json").stdout))["waypoint-web-0"]
    pid = wp["proxy"]["pid"]
    probe = subprocess.Popen(
        [*HM, "lab", "exec", "shop/front-0", "--", "python3", "-c", ALTERNATE, "5"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout is not None and probe.stdout.readline().strip() == "go"
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        out, _ = probe.communicate(timeout=60)
    finally:
        if probe.poll() is None:
            probe.kill()
    samples = json.loads(out)
    assert samples and all(db == 200 for _, _, db in samples), samples  # db: 100 %
    web = [status for _, status, _ in samples]
    down = [t for t, status, _ in samples if status != 200]
    print(f"waypoint killed: {len(samples)} rounds, db {len(samples)}/{len(samples)} ok, web "
          f"failed {len(down)} times between t={down[0] if down else 0}s and "
          f"t={down[-1] if down else 0}s")
    assert web[0] == 200 and 200 in web and any(s != 200 for s in web), web
    # the lab restarts the waypoint's proxy: web recovers
    deadline = time.monotonic() + 60
    while call("shop/front-0", "web/")[0]["status"] != 200:
        assert time.monotonic() < deadline, "web never recovered after the waypoint restart"
        time.sleep(1)
