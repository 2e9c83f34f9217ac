"""The demo topology with every workload in the ``kernel`` placement, through the real CLI.

Services must be reachable from the pods through socket LB alone: the pods' netns hold no
iptables rule for any service, getpeername() still reports the ClusterIP, and the node
agents' sock-lb counters show the connects. Runs as root in a sandbox; never skips.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from hmcli import hm

from hybridmesh.lab import _sh, names
from hybridmesh.lab.demo import with_placement

pytestmark = [pytest.mark.privileged, pytest.mark.slow, pytest.mark.timeout(300)]

CALLER = """
import json, socket, sys, urllib.request
out = {}
for name, vip in json.loads(sys.argv[1]).items():
    status = urllib.request.urlopen(f"http://{name}/", timeout=5).status
    s = socket.create_connection((vip, 80), timeout=5)
    out[name] = [status, s.getpeername()[0]]
    s.close()
print(json.dumps(out))
"""


def status() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(hm("lab", "status", "-o", "json").stdout)
    return data


def sock_lb(node_doc: dict[str, Any]) -> dict[str, Any]:
    return next(d for d in node_doc["datapaths"] if d["name"] == "sock-lb")


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


def test_demo_in_kernel_placement_uses_socket_lb_and_no_iptables(
    kernel_lab: dict[str, Any],
) -> None:
    pods = kernel_lab["pods"]
    assert kernel_lab["phase"] == "Ready" and all(p["ready"] for p in pods)
    assert {p["placement"] for p in pods} == {"kernel"}
    assert {a["node"] for a in kernel_lab["agents"]} == {"node-1", "node-2"}
    vips = {s["name"]: s["clusterIP"] for s in kernel_lab["services"]}

    for pod in pods:  # no service rule anywhere in a kernel pod's netns
        netns = names.pod_netns(pod["namespace"], pod["name"])
        dump = _sh.run(["ip", "netns", "exec", netns, "iptables-save"])
        assert "HM-" not in dump, f"{netns} has hybridmesh iptables rules:\n{dump}"
        assert not any(vip in dump for vip in vips.values()), dump

    before = {n["node"]: sock_lb(n)["detail"]["services"]
              for n in json.loads(hm("ebpf", "status", "-o", "json").stdout)["nodes"]}
    callers = {"node-1": "shop/frontend-0", "node-2": "shop/loadgen-0"}
    for node, caller in callers.items():
        out = json.loads(hm("lab", "exec", caller, "--", "python3", "-c", CALLER,
                            json.dumps(vips)).stdout)
        # every service answers; the socket's peer is the ClusterIP, not the chosen backend
        assert out == {name: [200, vip] for name, vip in vips.items()}, (node, out)

    after = json.loads(hm("ebpf", "status", "-o", "json").stdout)["nodes"]
    for node_doc in after:
        lb = sock_lb(node_doc)
        local = sorted(p["namespace"] + "/" + p["name"] for p in pods
                       if p["node"] == node_doc["node"])
        assert lb["detail"]["pods"] == local
        programs = {p["name"]: p for p in lb["programs"]}
        assert programs["hm_connect4"]["attach"] == f"cgroup/connect4 on {len(local)} cgroups"
        assert programs["hm_connect4"]["runCount"] > 0  # the agents keep run stats on
        for vip in vips.values():
            key = f"{vip}:80/tcp"
            grew = lb["detail"]["services"][key]["connects"] - before[node_doc["node"]][key][
                "connects"]
            # each caller made two connects per service (HTTP + the getpeername check)
            assert grew >= 2, (node_doc["node"], key, grew)
