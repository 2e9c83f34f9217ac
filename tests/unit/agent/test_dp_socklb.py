"""The socket-LB datapath's pure part: which services and backends the node state asks for."""

from __future__ import annotations

from ipaddress import IPv4Address

from hybridmesh.agent.datapath import NodeState
from hybridmesh.agent.dp_socklb import PLACEMENTS, desired_services
from hybridmesh.control.model import Endpoint, ServiceInfo, ServicePortInfo
from hybridmesh.ebpf.sock_lb import Service


def ep(ip: str) -> Endpoint:
    return Endpoint("p", "shop", ip, "n1", "sa", "kernel")


def test_every_service_port_maps_to_its_endpoints_at_the_target_port() -> None:
    ports = (ServicePortInfo("http", 80, 8080, "http"), ServicePortInfo("m", 9090, 9091, None))
    web = ServiceInfo("web", "shop", "10.96.0.10", ports, {"app": "web"},
                      (ep("10.244.2.3"), ep("10.244.1.2")))  # fmt: skip
    empty = ServiceInfo("db", "shop", "10.96.0.11", (ServicePortInfo("", 5432, 5432, None),), {})
    headless = ServiceInfo("h", "shop", "", (ServicePortInfo("", 1, 1, None),), {})
    state = NodeState("n1", 1, (), (web, empty, headless), ())
    vip = IPv4Address("10.96.0.10")
    assert desired_services(state) == {
        Service(vip, 80): ((IPv4Address("10.244.1.2"), 8080), (IPv4Address("10.244.2.3"), 8080)),
        Service(vip, 9090): ((IPv4Address("10.244.1.2"), 9091), (IPv4Address("10.244.2.3"), 9091)),
        Service(IPv4Address("10.96.0.11"), 5432): (),  # no endpoint: connects are refused
    }


def test_only_kernel_pods_are_balanced_for_now() -> None:
    assert PLACEMENTS == ("kernel",)
