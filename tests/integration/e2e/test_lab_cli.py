"""The lab end to end through the real CLI: up, status, cross-node service call, exec, apply, down.

These run as root with real namespaces, veths, cgroups and iptables; they never skip in CI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hmcli import HM, hm

from hybridmesh import env as hm_env
from hybridmesh.lab import cleanup

pytestmark = [pytest.mark.privileged, pytest.mark.slow]


TOPOLOGY = """
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
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  replicas: 3
  command: ["python3", "-m", "hybridmesh.lab.workloads.httpsvc", "--port", "{port}"]
  ports: [{name: http, containerPort: 8080}]
  resources: {limits: {cpu: 500m, memory: 128Mi}}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: client, namespace: shop, labels: {app: client}}
spec:
  replicas: 2
  node: node-1
  command: ["sleep", "infinity"]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: other, namespace: tools, labels: {app: other}}
spec:
  node: node-2
  command: ["sleep", "infinity"]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, appProtocol: http}]
"""

SCALE = """
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  replicas: 4
  command: ["python3", "-m", "hybridmesh.lab.workloads.httpsvc", "--port", "{port}"]
  ports: [{name: http, containerPort: 8080}]
  resources: {limits: {cpu: 500m, memory: 128Mi}}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web2, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 8081, targetPort: 8080}]
"""


def status() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(hm("lab", "status", "-o", "json").stdout)
    return data


@pytest.fixture
def lab_file(tmp_path: Path) -> Path:
    hm("lab", "down")
    path = tmp_path / "topo.yaml"
    path.write_text(TOPOLOGY)
    return path


def test_lab_lifecycle(lab_file: Path, tmp_path: Path) -> None:
    try:
        up = json.loads(hm("lab", "up", str(lab_file), "-o", "json").stdout)
        assert up["phase"] == "Ready"
        assert len(up["pods"]) == 6
        assert all(p["ready"] for p in up["pods"])
        assert {p["node"] for p in up["pods"] if p["workload"] == "web"} == {"node-1", "node-2"}

        # a pod on node-1 calls the service by its short DNS name; the answers come from
        # backends on both nodes (kube-proxy-like balancing across the fabric)
        script = (
            "import urllib.request,json\n"
            "seen=set()\n"
            "for _ in range(60):\n"
            "    seen.add(urllib.request.urlopen('http://web/', timeout=3).status)\n"
            "print(json.dumps(sorted(seen)))\n"
        )
        out = hm("lab", "exec", "shop/client-0", "--", "python3", "-c", script)
        assert json.loads(out.stdout) == [200]
        fqdn = hm("lab", "exec", "client-0", "--", "getent", "hosts", "web.shop.svc.cluster.local")
        web_ip = next(s["clusterIP"] for s in status()["services"] if s["name"] == "web")
        assert fqdn.stdout.split()[0] == web_ip
        # a pod in another namespace does not get the bare name, only qualified ones
        assert (
            hm(
                "lab", "exec", "tools/other-0", "--", "getent", "hosts", "web", check=False
            ).returncode
            != 0
        )
        assert (
            hm("lab", "exec", "tools/other-0", "--", "getent", "hosts", "web.shop").returncode == 0
        )

        # the env Kubernetes would give
        env = hm(
            "lab",
            "exec",
            "client-0",
            "--",
            "sh",
            "-c",
            "echo $POD_NAME $POD_NAMESPACE $WEB_SERVICE_HOST",
        ).stdout
        assert env.split() == ["client-0", "shop", web_ip]

        # exit codes pass through, stdin too
        assert (
            hm("lab", "exec", "client-1", "--", "sh", "-c", "exit 7", check=False).returncode == 7
        )
        piped = subprocess.run(
            [*HM, "lab", "exec", "client-1", "--", "cat"],
            input="hello\n",
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert piped.stdout == "hello\n"

        # per-pod cgroup accounting and limits are visible
        web0 = next(p for p in status()["pods"] if p["name"] == "web-0")
        assert web0["usage"]["memoryBytes"] > 1_000_000
        assert web0["limits"] == {"cpuMillis": 500, "memoryBytes": 128 * 2**20}

        # a crashed app is restarted by the supervisor, like a kubelet would
        victim = next(p for p in status()["pods"] if p["name"] == "web-1")
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            again = next(p for p in status()["pods"] if p["name"] == "web-1")
            if again["restarts"] >= 1 and again["ready"]:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"web-1 was not restarted: {again}")
        assert again["pid"] != victim["pid"]

        # apply: scale up and add a service without tearing down
        before = {p["name"]: p["ip"] for p in status()["pods"]}
        scale = tmp_path / "scale.yaml"
        scale.write_text(SCALE)
        applied = json.loads(hm("lab", "apply", str(scale), "-o", "json").stdout)
        assert applied["podsAdded"] == ["shop/web-3"]
        after = status()
        assert {p["name"]: p["ip"] for p in after["pods"] if p["name"] in before} == before
        web2 = next(s for s in after["services"] if s["name"] == "web2")
        assert len(web2["endpoints"]) == 4
        out = hm(
            "lab",
            "exec",
            "client-0",
            "--",
            "python3",
            "-c",
            "import urllib.request;print(urllib.request.urlopen('http://web2.shop:8081/',timeout=3).status)",
        )
        assert out.stdout.strip() == "200"

        # a bad change is refused with FILE:LINE and changes nothing
        bad = tmp_path / "bad.yaml"
        bad.write_text(SCALE.replace("replicas: 4", "replicas: many"))
        refused = hm("lab", "apply", str(bad), check=False)
        assert refused.returncode != 0
        assert f"{bad}:" in refused.stderr
        assert len(status()["pods"]) == 7
    finally:
        hm("lab", "down")
    assert not cleanup.leftovers()


def test_lab_down_after_sigkill_of_lab_up(lab_file: Path) -> None:
    """kill -9 both the CLI and the daemon mid-way through `lab up`; `lab down` reclaims all."""
    proc = subprocess.Popen(
        [*HM, "lab", "up", str(lab_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file = hm_env.STATE_DIR / "daemon.pid"
    deadline = time.monotonic() + 60
    # wait until the daemon is creating pods: some pod netns exist but the lab is not ready
    while time.monotonic() < deadline:
        netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
        if any(n.startswith("hm-pod-") for n in netns) and pid_file.exists():
            break
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail("lab up never started creating pods")
    daemon = int(pid_file.read_text())
    os.killpg(proc.pid, signal.SIGKILL)
    os.kill(daemon, signal.SIGKILL)
    proc.wait()
    assert cleanup.leftovers()  # the crash really left things behind
    down = hm("lab", "down", "-o", "json")
    assert json.loads(down.stdout)["netns"] >= 1
    left = cleanup.leftovers()
    assert not left, left
    # and no process of ours survives anywhere on the machine
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cg = Path(f"/proc/{pid}/cgroup").read_text()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        # a zombie is dead already (its parent, here init, has yet to reap it)
        assert state == "Z" or "hm-" not in cg, f"pid {pid} still in an hm- cgroup: {cg}"


def test_lab_up_refuses_invalid_topology_and_creates_nothing(tmp_path: Path) -> None:
    hm("lab", "down")
    bad = tmp_path / "bad.yaml"
    bad.write_text(TOPOLOGY.replace("replicas: 3", "replica: 3"))
    proc = hm("lab", "up", str(bad), check=False)
    assert proc.returncode != 0
    assert f"{bad}:" in proc.stderr and "replica" in proc.stderr
    assert not cleanup.leftovers()


def test_demo_reports_every_edge() -> None:
    hm("lab", "down")
    proc = hm("demo", "--duration", "3", "-o", "json")
    data = json.loads(proc.stdout)
    edges = {(e["source"], e["destination"]): e for e in data["edges"]}
    assert set(edges) >= {
        ("shop/loadgen", "frontend"),
        ("shop/frontend", "catalog"),
        ("shop/frontend", "reviews"),
        ("shop/reviews", "ratings"),
    }
    for edge in edges.values():
        assert edge["requests"] > 0
        assert edge["successRate"] == 1.0
        assert 0 < edge["p50Ms"] <= edge["p99Ms"]
    assert not cleanup.leftovers()
