"""Restarting a node agent (twice) while a kernel-placement pod streams on 100 connections.

The agent's datapaths take their pinned maps and links over on start and swap programs in
atomically, so: no connection is interrupted, no echo stalls, and connects made during and
after the restarts are still balanced over both backends by socket LB. Runs as root in a
sandbox, through the real CLI; never skips.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _hmcli() -> Any:
    """The e2e modules' one CLI helper (tests/integration/e2e/hmcli.py), not a copy of it."""
    path = Path(__file__).parents[1] / "e2e" / "hmcli.py"
    spec = importlib.util.spec_from_file_location("hmcli", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HM: list[str] = _hmcli().HM
hm = _hmcli().hm

pytestmark = [pytest.mark.privileged, pytest.mark.slow, pytest.mark.timeout(240)]

STREAMER = Path(__file__).with_name("streamer.py")
CONNS = 100

TOPOLOGY = """
apiVersion: hybridmesh.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {defaultPlacement: kernel}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: node-1}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Node
metadata: {name: node-2}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: echo, namespace: shop, labels: {app: echo}}
spec:
  replicas: 2
  command: ["python3", "-m", "hybridmesh.lab.workloads.banner", "serve", "--port", "{port}"]
  ports: [{name: tcp, containerPort: 2525}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: client, namespace: shop, labels: {app: client}}
spec:
  node: node-1
  command: ["sleep", "infinity"]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  selector: {app: echo}
  ports: [{name: tcp, port: 2525, targetPort: 2525, appProtocol: tcp}]
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    hm("lab", "down")
    topo = tmp_path / "restart.yaml"
    topo.write_text(TOPOLOGY)
    try:
        yield json.loads(hm("lab", "up", str(topo), "-o", "json").stdout)
    finally:
        hm("lab", "down")


def sock_lb_connects(node: str) -> int:
    doc = json.loads(hm("ebpf", "status", "--node", node, "-o", "json").stdout)
    lb = next(d for d in doc["nodes"][0]["datapaths"] if d["name"] == "sock-lb")
    return int(lb["detail"]["connects"])


def test_agent_restarts_interrupt_no_connection(lab: dict[str, Any]) -> None:
    vip = next(s["clusterIP"] for s in lab["services"] if s["name"] == "echo")
    echo_pods = {p["name"] for p in lab["pods"] if p["workload"] == "echo"}
    before = sock_lb_connects("node-1")
    proc = subprocess.Popen(
        [*HM, "lab", "exec", "shop/client-0", "--", "python3", str(STREAMER), vip, "2525",
         "--conns", str(CONNS), "--seconds", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read() if proc.stderr else ""
        pids = []
        for _ in range(2):
            time.sleep(1.0)
            out = json.loads(hm("agent", "restart", "node-1", "-o", "json").stdout)
            assert out["ready"] and out["pid"] != out["oldPid"], out
            pids.append((out["oldPid"], out["pid"]))
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert pids[0][1] == pids[1][0]  # the second restart replaced the first's successor
    result = json.loads(stdout.strip().splitlines()[-1])
    print(f"restarts {pids}: maxGap {result['maxGap']:.3f}s, {result['bytes']} bytes, "
          f"new connects {result['newConnects']}")
    assert result["failures"] == [], result["failures"][:5]
    assert result["newConnectFailures"] == [], result["newConnectFailures"][:5]
    assert proc.returncode == 0, stderr
    assert result["maxGap"] < 2.0, f"an echo stalled for {result['maxGap']:.2f}s"
    assert result["bytes"] > CONNS * 2 * 64 * 50  # data kept flowing on every connection
    # the long-lived connections and the new ones were balanced, through the VIP, by socket LB
    backends = {who.split("@")[0] for who in [*result["backends"], *result["newConnects"]]}
    assert backends == echo_pods, result
    assert all(who.endswith(f"@{vip}") for who in result["newConnects"]), result["newConnects"]
    assert sum(result["newConnects"].values()) >= 40
    assert sock_lb_connects("node-1") - before >= CONNS + 40
