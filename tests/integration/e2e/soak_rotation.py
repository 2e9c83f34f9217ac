"""Rotation soak (issue 4's must-show; a script, not a timed test):

    tools/sandbox NAME .venv/bin/python tests/integration/e2e/soak_rotation.py \
        [--duration 600] [--rate 200] [--ttl 2m]

Brings up a lab with STRICT mTLS and a 2-minute certificate TTL (two meshed pods: an open-loop
load client and the demo HTTP service), runs ``hybridmesh.lab.workloads.loadgen`` at 200 req/s
for 10 minutes through both sidecars, and reads every proxy's SVID generation and renewal count
with ``hybridmesh identity -o json`` before and after. Passes when no request failed (every
answer 200, no transport error, nothing left unsent) and each proxy rotated at least 4 times.
Prints one JSON summary line; exit status 0 = pass. Takes the machine's lab down first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from hmcli import hm

TOPOLOGY = """
apiVersion: hybridmesh.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec: {{trustDomain: soak.example, mtls: {{mode: STRICT}}, defaultPlacement: sidecar,
        certificateTTL: {ttl}}}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: web, namespace: soak, labels: {{app: web}}}}
spec:
  serviceAccount: web
  command: ["python3", "-m", "hybridmesh.lab.workloads.httpsvc", "--port", "{{port}}"]
  ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {{name: client, namespace: soak, labels: {{app: client}}}}
spec: {{serviceAccount: client, command: ["sleep", "infinity"]}}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {{name: web, namespace: soak}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080, appProtocol: http}}]
"""

PODS = ("soak/web-0", "soak/client-0")


def identities() -> dict[str, Any]:
    out = {}
    for pod in PODS:
        doc = json.loads(hm("identity", pod, "-o", "json").stdout)
        out[pod] = [{k: w[k] for k in ("serial", "generation", "renewals", "failures",
                                       "notBefore", "notAfter")} for w in doc["workers"]]
    return out


def soak(duration: int, rate: int, ttl: str) -> dict[str, Any]:
    before = identities()
    load = hm("lab", "exec", "client-0", "--", "python3", "-m",
              "hybridmesh.lab.workloads.loadgen", "--target", "http://web/", "--rate",
              str(rate), "--duration", str(duration), "--concurrency", "64", "--json",
              timeout=duration + 120)
    summary = json.loads(load.stdout.strip().splitlines()[-1])
    after = identities()
    rotations = {pod: after[pod][0]["generation"] - before[pod][0]["generation"]
                 for pod in PODS}
    failed = summary["errors"] + summary["unsent"] + sum(
        n for code, n in summary["statuses"].items() if code != "200")
    return {
        "ttl": ttl, "rate": rate, "duration_s": summary["duration_s"],
        "requests": summary["requests"], "achieved_rate": summary["achieved_rate"],
        "failed": failed, "statuses": summary["statuses"],
        "p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"],
        "p999_ms": summary["p999_ms"], "rotations": rotations,
        "renewal_failures": {p: after[p][0]["failures"] for p in PODS},
        "before": before, "after": after,
        "pass": failed == 0 and min(rotations.values()) >= 4,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=600)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--ttl", default="2m")
    args = parser.parse_args()
    hm("lab", "down")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="hm-soak-") as f:
        f.write(TOPOLOGY.format(ttl=args.ttl))
        f.flush()
        try:
            hm("lab", "up", f.name)
            result = soak(args.duration, args.rate, args.ttl)
        finally:
            hm("lab", "down")
    print(json.dumps(result))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
