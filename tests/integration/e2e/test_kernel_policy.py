"""Identity-based L4 policy in the ``kernel`` placement, on the demo topology, through the CLI.

Two ALLOW policies: catalog admits frontend's identity on 8080; frontend admits loadgen's. So
frontend→catalog works, ratings→frontend is dropped in the kernel (default-deny: the SYN never
gets an answer, the connect times out), and the drop shows up in ``hybridmesh observe`` naming
``shop/frontend-allow``. Runs as root in a sandbox; never skips.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from hmcli import hm

from hybridmesh.lab.demo import with_placement

pytestmark = [pytest.mark.privileged, pytest.mark.slow, pytest.mark.timeout(300)]

POLICIES = """
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: catalog}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/frontend"]}}]
    to: [{operation: {ports: ["8080"]}}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: frontend}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/loadgen"]}}]
"""

# prints "ok" or the failure, never raises: the verdict is the output
CONNECT = """
import sys, urllib.request
try:
    print(urllib.request.urlopen(f"http://{sys.argv[1]}/", timeout=float(sys.argv[2])).status)
except Exception as exc:
    print(type(getattr(exc, "reason", exc)).__name__)
"""


@pytest.fixture
def policy_lab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    hm("lab", "down")
    demo = files("hybridmesh.resources.topologies").joinpath("demo.yaml").read_text()
    topo = tmp_path / "kernel-policy.yaml"
    topo.write_text(with_placement(demo, "kernel") + POLICIES)
    try:
        yield json.loads(hm("lab", "up", str(topo), "-o", "json").stdout)
    finally:
        hm("lab", "down")


def call(pod: str, service: str, timeout: float = 2.0) -> str:
    out = hm("lab", "exec", pod, "--", "python3", "-c", CONNECT, service, str(timeout))
    return out.stdout.strip()


def drops(deadline: float) -> list[dict[str, Any]]:
    """DROPPED flows from observe, waiting for the agents to deliver at least one."""
    while True:
        out = hm("observe", "--last", "200", "--verdict", "DROPPED", "-o", "json").stdout
        found = [json.loads(line) for line in out.splitlines() if line.strip()]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_kernel_policy_allows_frontend_to_catalog_and_drops_ratings_to_frontend(
    policy_lab: dict[str, Any],
) -> None:
    pods = policy_lab["pods"]
    assert policy_lab["phase"] == "Ready" and all(p["ready"] for p in pods)  # probes pass
    assert call("shop/frontend-0", "catalog") == "200"
    assert call("shop/ratings-0", "frontend") in ("timeout", "TimeoutError")
    found = drops(time.monotonic() + 15)
    to_frontend = [
        f for f in found
        if f["source"]["pod"] == "shop/ratings-0"
        and (f["destination"]["pod"] or "").startswith("shop/frontend-")
    ]
    assert to_frontend, f"no ratings->frontend drop in observe: {found}"
    assert {f["policy"] for f in to_frontend} == {"shop/frontend-allow"}
    assert all(f["kind"] == "drop" and f["destination"]["port"] == 8080 for f in to_frontend)
    # frontend->catalog was admitted by the ALLOW policy, nothing of it was dropped
    assert not [f for f in found if (f["destination"]["pod"] or "").startswith("shop/catalog-")
                and (f["source"]["pod"] or "").startswith("shop/frontend-")]
    status = json.loads(hm("ebpf", "status", "-o", "json").stdout)["nodes"]
    l4 = [d for n in status for d in n["datapaths"] if d["name"] == "l4policy"]
    assert sum(d["detail"]["dropped_new"] for d in l4) >= 1
    assert sum(d["detail"]["allowed_new"] for d in l4) >= 1
