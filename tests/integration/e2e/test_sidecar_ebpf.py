"""The `sidecar+ebpf` placement through the real lab: the demo meshed, captured by eBPF.

The same assertions as test_sidecar_lab.py (every edge served, the proxies' metrics see the
traffic), plus: no iptables rule in any pod, and the node agents' capture datapath did the
redirecting (programs attached to every pod, original destinations answered, inbound steered).
Root, real namespaces, node agents and proxies; never skipped in CI.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hmcli import hm

from hybridmesh.lab import cleanup

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

PLACEMENT = "sidecar+ebpf"


def _capture_status() -> list[dict[str, Any]]:
    doc = json.loads(hm("ebpf", "status", "-o", "json").stdout)
    found = []
    for node in doc["nodes"]:
        found += [d for d in node["datapaths"] if d["name"] == "capture"]
    return found


# what an app sees as its peer, open and after the server side closed (CLOSE_WAIT)
PEER = """
import json, socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((ip, port), timeout=5)
seen = [s.getsockname()[0], list(s.getpeername())]
s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
while s.recv(65536):
    pass
seen.append(list(s.getpeername()))
print(json.dumps(seen))
"""


def _assert_peer_is_what_the_app_dialled(status: dict[str, Any]) -> None:
    """getpeername() in a captured app reports the service IP, as under iptables REDIRECT."""
    svc = next(s for s in status["services"] if s["name"] == "catalog")
    ip, port = svc["clusterIP"], svc["ports"][0]["port"]
    pod = next(p for p in status["pods"] if p["name"].startswith("frontend-"))
    out = hm("lab", "exec", f"{pod['namespace']}/{pod['name']}", "--", sys.executable, "-c",
             PEER, ip, str(port)).stdout
    local, *peers = json.loads(out)
    assert local == "127.0.0.1"  # captured: the kernel connected it to the proxy's 15001
    assert peers == [[ip, port], [ip, port]]


def test_demo_meshed_with_ebpf_captured_sidecars_end_to_end() -> None:
    hm("lab", "down")
    try:
        demo = json.loads(
            hm("demo", "--placement", PLACEMENT, "--duration", "3", "--keep", "-o", "json").stdout
        )
        edges = {(e["source"], e["destination"]): e for e in demo["edges"]}
        assert set(edges) >= {
            ("shop/loadgen", "frontend"),
            ("shop/frontend", "catalog"),
            ("shop/frontend", "reviews"),
            ("shop/reviews", "ratings"),
        }
        for edge in edges.values():
            assert edge["requests"] > 0 and edge["successRate"] == 1.0, edges

        status: dict[str, Any] = json.loads(hm("lab", "status", "-o", "json").stdout)
        for pod in status["pods"]:
            assert pod["placement"] == PLACEMENT
            assert pod["proxy"]["ready"], pod
            # zero iptables rules in the pod: capture is eBPF's
            saved = hm("lab", "exec", f"{pod['namespace']}/{pod['name']}", "--",
                       "iptables-save").stdout
            assert [r for r in saved.splitlines() if r.startswith("-A")] == [], (pod, saved)
        _assert_peer_is_what_the_app_dialled(status)

        captures = _capture_status()
        assert captures, "no node agent runs the capture datapath"
        programmed = sorted(p for c in captures for p in c["detail"]["programmed"])
        assert programmed == sorted(f"{p['namespace']}/{p['name']}" for p in status["pods"])
        assert sum(c["detail"]["outboundRedirected"] for c in captures) > 0
        assert sum(c["detail"]["originalDstAnswered"] for c in captures) > 0
        assert all(c["detail"]["originalDstUnknown"] == 0 for c in captures)
        steered = [v["steered"] for c in captures for v in c["detail"]["inbound"].values()]
        assert sum(steered) > 0

        # the proxies' own metrics see the same traffic, per workload, on the inbound side
        stat = json.loads(hm("stat", "--window", "2", "-o", "json").stdout)
        rows = {r["name"]: r for r in stat["rows"]}
        for name in ("frontend", "catalog", "reviews", "ratings"):
            assert rows[name]["meshedPods"] == rows[name]["pods"], rows[name]
            assert rows[name]["rps"] > 10, rows[name]
            assert rows[name]["successRate"] == 1.0, rows[name]
    finally:
        hm("lab", "down")
    assert not cleanup.leftovers()
