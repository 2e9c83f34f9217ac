"""The `sidecar` placement through the real lab: the whole demo meshed, stat reads the proxies.

Root, real namespaces, iptables capture and proxies; never skipped in CI.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hmcli import hm

from hybridmesh.lab import cleanup

pytestmark = [pytest.mark.privileged, pytest.mark.slow]


def test_demo_meshed_with_sidecars_end_to_end() -> None:
    hm("lab", "down")
    try:
        demo = json.loads(
            hm("demo", "--placement", "sidecar", "--duration", "3", "--keep", "-o", "json").stdout
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
            assert pod["placement"] == "sidecar"
            assert pod["proxy"]["ready"], pod
        # the app's traffic really is captured: the nat OUTPUT chain redirects to 15001
        rules = hm("lab", "exec", "frontend-0", "--", "iptables", "-t", "nat", "-S").stdout
        assert "--to-ports 15001" in rules and "--to-ports 15006" in rules
        assert "HM-SERVICES" not in rules  # the proxy balances, not kube-proxy rules

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
