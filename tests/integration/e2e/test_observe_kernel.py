"""`hybridmesh observe` on the demo topology in the ``kernel`` placement, through the real CLI.

HTTP exchanges from shop/frontend-0 to the catalog service (balanced by socket LB to a catalog
pod on either node): every agent that holds one of an exchange's ends reports its open and
close with pod names, the backend's address (not the ClusterIP) and, across nodes, the exact
bytes the client sent and received. Runs as root in a sandbox; never skips.
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

CLIENT = """
import json, socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=5)
request = b"GET / HTTP/1.1\\r\\nHost: catalog\\r\\nConnection: close\\r\\n\\r\\n"
s.sendall(request)
received = 0
while chunk := s.recv(65536):
    received += len(chunk)
port = s.getsockname()[1]
s.close()
print(json.dumps({"port": port, "sent": len(request), "received": received}))
"""


@pytest.fixture
def kernel_lab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    hm("lab", "down")
    demo = files("hybridmesh.resources.topologies").joinpath("demo.yaml").read_text()
    topo = tmp_path / "kernel.yaml"
    topo.write_text(with_placement(demo, "kernel"))
    try:
        yield json.loads(hm("lab", "up", str(topo), "-o", "json").stdout)
    finally:
        hm("lab", "down")


def _observed(port: int, want: int) -> list[dict[str, Any]]:
    """The flows on ``port`` once ``want`` of them arrived (agents drain every 100 ms)."""
    deadline = time.monotonic() + 10
    while True:
        out = hm("observe", "--last", "20", "--port", str(port), "-o", "json").stdout
        flows = [json.loads(line) for line in out.splitlines()]
        if len(flows) >= want or time.monotonic() > deadline:
            return flows
        time.sleep(0.2)


def _exchange(vip: str) -> dict[str, int]:
    out = hm("lab", "exec", "shop/frontend-0", "--", "python3", "-c", CLIENT, vip).stdout
    seen: dict[str, int] = json.loads(out)
    assert seen["received"] > 0
    return seen


def test_observe_shows_the_exchange_with_pod_names(kernel_lab: dict[str, Any]) -> None:
    pods = {f"{p['namespace']}/{p['name']}": p for p in kernel_lab["pods"]}
    vip = next(s["clusterIP"] for s in kernel_lab["services"] if s["name"] == "catalog")
    client_node = pods["shop/frontend-0"]["node"]
    for _ in range(12):  # until socket LB picks the catalog pod on the other node
        seen = _exchange(vip)
        flows = _observed(seen["port"], 2)
        assert flows, "observe showed nothing for the exchange"
        backend = flows[0]["destination"]["pod"]
        assert backend in pods and backend.startswith("shop/catalog-"), flows
        assert {(f["node"], f["kind"]) for f in flows} >= {(client_node, "open"),
                                                         (client_node, "close")}  # fmt: skip
        if pods[backend]["node"] != client_node:
            break
        # same node: sockmap carried the payload past TCP, and counted it for flows
        for flow in (f for f in flows if f["kind"] == "close"):
            assert (flow["bytesSent"], flow["bytesReceived"]) == (seen["sent"], seen["received"])
    else:
        pytest.fail("socket LB never picked the catalog pod on the other node in 12 tries")
    # both nodes report their end; between nodes the bytes went through TCP
    flows = _observed(seen["port"], 4)
    nodes = (client_node, pods[backend]["node"])
    assert sorted((f["node"], f["kind"]) for f in flows) == sorted(
        (n, k) for n in nodes for k in ("close", "open")
    ), flows
    for flow in flows:
        assert flow["source"] == {"ip": pods["shop/frontend-0"]["ip"], "port": seen["port"],
                                  "pod": "shop/frontend-0"}  # fmt: skip
        assert flow["destination"] == {"ip": pods[backend]["ip"], "port": 8080, "pod": backend}
        assert flow["verdict"] == "FORWARDED"
        if flow["kind"] == "close":
            assert (flow["bytesSent"], flow["bytesReceived"]) == (seen["sent"], seen["received"])
            assert flow["rttUs"] > 0
    line = hm("observe", "--last", "5", "--from-pod", "shop/frontend-0", "--port",
              str(seen["port"])).stdout.splitlines()[-1]  # fmt: skip
    assert f"shop/frontend-0:{seen['port']} -> {backend}:8080  tcp close FORWARDED" in line
