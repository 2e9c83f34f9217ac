"""ClusterIP services: DNAT in the client's own netns balances over endpoints on both nodes."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from minilab import MiniLab, echo_from, endpoint

from hybridmesh.control.model import ServiceInfo, ServicePortInfo
from hybridmesh.lab import _sh, netns, servicelb
from hybridmesh.lab.names import node_netns

pytestmark = pytest.mark.privileged

CLUSTER_IP = "10.96.0.10"


def web_service(lab: MiniLab, backends: list[str]) -> ServiceInfo:
    port = ServicePortInfo("http", 80, 8080, "tcp")
    eps = tuple(endpoint(lab.pods[name]) for name in backends)
    return ServiceInfo("web", "shop", CLUSTER_IP, (port,), {"app": "web"}, eps)


def spread(lab_netns: str, connections: int) -> Counter[str]:
    return Counter(echo_from(lab_netns, CLUSTER_IP, 80)[0] for _ in range(connections))


def test_cluster_ip_balances_over_every_ready_endpoint(mini_lab: MiniLab) -> None:
    backends = ["web-0", "web-1", "web-2", "web-3"]
    for name in backends:
        mini_lab.start_echo(name)
    client = mini_lab.netns("client-0")
    servicelb.apply_rules(client, servicelb.render_rules([web_service(mini_lab, backends)]))
    seen = spread(client, 60)
    assert set(seen) == set(backends)  # all four, on both nodes (miss chance ~4*(3/4)^60)
    _, peer = echo_from(client, CLUSTER_IP, 80)
    assert peer == mini_lab.pods["client-0"].ip  # the backend sees the real client


def test_endpoint_changes_apply_atomically_and_stale_chains_go(mini_lab: MiniLab) -> None:
    for name in ("web-0", "web-1"):
        mini_lab.start_echo(name)
    client = mini_lab.netns("client-1")
    both = web_service(mini_lab, ["web-0", "web-1"])
    servicelb.apply_rules(client, servicelb.render_rules([both]))
    servicelb.apply_rules(client, servicelb.render_rules([web_service(mini_lab, ["web-1"])]))
    assert spread(client, 10) == {"web-1": 10}
    servicelb.apply_rules(client, servicelb.render_rules([]))
    saved = _sh.iptables_save(client)
    assert "HM-SVC-" not in saved
    assert saved.count("-j HM-SERVICES") == 2  # one jump per table, still in place


def test_service_without_endpoints_refuses_at_once(mini_lab: MiniLab) -> None:
    client = mini_lab.netns("client-0")
    servicelb.apply_rules(client, servicelb.render_rules([web_service(mini_lab, [])]))
    start = time.perf_counter()
    with pytest.raises(ConnectionRefusedError):
        netns.connect(client, CLUSTER_IP, 80, timeout=3.0)
    assert time.perf_counter() - start < 0.5


def test_node_netns_processes_reach_services_too(mini_lab: MiniLab) -> None:
    mini_lab.start_echo("web-1")
    node = node_netns("n1")
    servicelb.apply_rules(node, servicelb.render_rules([web_service(mini_lab, ["web-1"])]))
    assert echo_from(node, CLUSTER_IP, 80)[0] == "web-1"


def test_rules_stay_first_in_output_when_others_insert_before_them(mini_lab: MiniLab) -> None:
    client = mini_lab.netns("client-0")
    payload = servicelb.render_rules([web_service(mini_lab, ["web-0"])])
    servicelb.apply_rules(client, payload)
    _sh.run(_sh.in_netns(client, ["iptables", "-t", "nat", "-I", "OUTPUT", "1", "-d",
                                  "192.0.2.1", "-j", "RETURN"]))
    servicelb.apply_rules(client, payload)
    nat = _sh.run(_sh.in_netns(client, ["iptables", "-t", "nat", "-S", "OUTPUT"])).splitlines()
    assert nat[1].endswith("-j HM-SERVICES") and sum("HM-SERVICES" in r for r in nat) == 1
