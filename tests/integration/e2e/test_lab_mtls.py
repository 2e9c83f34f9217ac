"""Identity in the running lab: the daemon's CA, per-pod tokens, proxies with SVIDs, STRICT mTLS.

Root, real namespaces, capture and proxies; never skipped in CI. Like the other e2e tests it
takes the machine's lab down first (every ``hm-`` object).
"""

from __future__ import annotations

import json
import stat
import tempfile
from typing import Any

import pytest
from hmcli import hm

from hybridmesh import env as hm_env
from hybridmesh.lab import cleanup
from hybridmesh.lab.client import LabClient

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

TD = "lab.example"

TOPOLOGY = f"""
apiVersion: hybridmesh.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec: {{trustDomain: {TD}, mtls: {{mode: STRICT}}, defaultPlacement: sidecar}}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: web, namespace: shop, labels: {{app: web}}}}
spec:
  serviceAccount: web-sa
  command: ["python3", "-m", "hybridmesh.lab.workloads.httpsvc", "--port", "{{port}}"]
  ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: client, namespace: shop, labels: {{app: client}}}}
spec:
  serviceAccount: client-sa
  command: ["sleep", "infinity"]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: outsider, namespace: shop, labels: {{app: outsider}}}}
spec:
  placement: none
  command: ["sleep", "infinity"]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080, appProtocol: http}}]
"""


def curl(pod: str, url: str) -> str:
    return hm(
        "lab",
        "exec",
        pod,
        "--",
        "curl",
        "-s",
        "--max-time",
        "3",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
        check=False,
    ).stdout.strip()


def fetch(pod: str, url: str) -> str:
    return hm("lab", "exec", pod, "--", "curl", "-s", "--max-time", "3", url).stdout


def test_lab_pods_get_svids_and_talk_strict_mtls() -> None:
    hm("lab", "down")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="hm-mtls-") as f:
        f.write(TOPOLOGY)
        f.flush()
        try:
            hm("lab", "up", f.name)
            _check_lab()
        finally:
            hm("lab", "down")
    assert not cleanup.leftovers()


def _check_lab() -> None:
    status: dict[str, Any] = json.loads(hm("lab", "status", "-o", "json").stdout)
    pods = {p["name"]: p for p in status["pods"]}
    assert status["identity"]["trustDomain"] == TD and status["identity"]["issued"] >= 2

    # the meshed client reaches web over mTLS; the unmeshed pod is refused (STRICT)
    assert curl("client-0", "http://web/") == "200"
    assert curl("outsider-0", "http://web/") == "000"

    web_ip = pods["web-0"]["ip"]
    metrics = fetch("client-0", f"http://{web_ip}:15020/metrics")
    client_id = f"spiffe://{TD}/ns/shop/sa/client-sa"
    mtls_lines = [
        line
        for line in metrics.splitlines()
        if line.startswith("identity_connections_total{")
        and 'connection_security_policy="mutual_tls"' in line
    ]
    assert any(f'source_principal="{client_id}"' in line for line in mtls_lines), metrics
    assert "identity_connections_refused_total" in metrics and '"plaintext-strict"' in metrics

    dump = json.loads(fetch("client-0", f"http://{web_ip}:15020/config_dump"))
    assert dump["identity"]["svid"]["identity"] == f"spiffe://{TD}/ns/shop/sa/web-sa"

    # the token: a file only the proxy's uid can read, never in the pod env, status or logs
    token_file = hm_env.STATE_DIR / "pods" / "shop_web-0" / "token"
    st = token_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o400
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert st.st_uid in (1337, 0)
    assert not (hm_env.STATE_DIR / "pods" / "shop_outsider-0").exists()  # unmeshed: no token
    token = token_file.read_text()
    outputs = [
        hm("lab", "status", "-o", "json").stdout,
        json.dumps(dump),
        metrics,
        hm("lab", "logs", "web-0").stdout,
        _proxy_log("shop", "web-0"),
        _proxy_log("shop", "client-0"),
        _pod_api("shop", "web-0"),
    ]
    for text in outputs:
        assert token not in text
        assert "PRIVATE KEY" not in text


def _proxy_log(namespace: str, pod: str) -> str:
    path = hm_env.STATE_DIR / "logs" / f"{namespace}_{pod}.proxy.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _pod_api(namespace: str, pod: str) -> str:
    """The lab API's pod record (it includes the pod's environment)."""
    result = LabClient().call("GET", f"/v1/lab/pods/{namespace}/{pod}")
    assert result.status == 200, result.body
    return json.dumps(result.body)
