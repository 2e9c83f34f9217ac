"""Kubernetes names inside a pod, from the bind-mounted hosts file."""

from __future__ import annotations

import sys
import time

import pytest
from minilab import MiniLab, endpoint

from hybridmesh.control.model import ServiceInfo, ServicePortInfo
from hybridmesh.lab import dns, procs, servicelb

pytestmark = pytest.mark.privileged

PORT = ServicePortInfo("http", 80, 8080, "tcp")


def run_logged(lab: MiniLab, pod: str, argv: list[str], timeout: float = 10.0) -> tuple[int, str]:
    log = lab.log_dir / f"{pod}-run.log"
    log.unlink(missing_ok=True)
    proc = procs.spawn_in_pod(lab.netns(pod), lab.cgroups[pod].procs_files("app"), argv, None, log)
    code = proc.wait(timeout)
    return code, log.read_text()


def test_service_names_resolve_like_kubernetes_dns(mini_lab: MiniLab) -> None:
    web = ServiceInfo("web", "shop", "10.96.0.10", (PORT,), {})
    db = ServiceInfo("db", "data", "10.96.0.12", (PORT,), {})
    client = mini_lab.pods["client-0"]
    dns.write_hosts(mini_lab.netns("client-0"), dns.render_hosts(client, [web, db]))
    code, out = run_logged(mini_lab, "client-0", ["getent", "hosts", "web.shop"])
    assert code == 0 and out.split()[0] == "10.96.0.10"
    code, out = run_logged(mini_lab, "client-0", ["getent", "hosts", "db.data.svc.cluster.local"])
    assert code == 0 and out.split()[0] == "10.96.0.12"


def test_unknown_names_fail_fast(mini_lab: MiniLab) -> None:
    client = mini_lab.pods["client-0"]
    dns.write_hosts(mini_lab.netns("client-0"), dns.render_hosts(client, []))
    start = time.perf_counter()
    code, _ = run_logged(mini_lab, "client-0", ["getent", "hosts", "nosuch.example.com"])
    assert code != 0
    assert time.perf_counter() - start < 1.0  # the host's resolver was not consulted


def test_running_processes_see_hosts_updates(mini_lab: MiniLab) -> None:
    client = mini_lab.pods["client-0"]
    netns = mini_lab.netns("client-0")
    dns.write_hosts(netns, dns.render_hosts(client, []))
    log = mini_lab.log_dir / "late.log"
    proc = procs.spawn_in_pod(netns, mini_lab.cgroups["client-0"].procs_files("app"),
                              ["sh", "-c", "sleep 0.5; getent hosts late.shop"], None, log)
    late = ServiceInfo("late", "shop", "10.96.0.99", (PORT,), {})
    dns.write_hosts(netns, dns.render_hosts(client, [late]))  # after the process started
    assert proc.wait(5) == 0
    assert log.read_text().split()[0] == "10.96.0.99"


CLIENT = """
import socket
with socket.create_connection(("web", 80), timeout=3) as s:
    print(s.makefile().readline().strip())
"""


def test_a_pod_reaches_a_service_by_its_short_name(mini_lab: MiniLab) -> None:
    mini_lab.start_echo("web-3")
    client = mini_lab.pods["client-0"]
    web = ServiceInfo("web", "shop", "10.96.0.10", (PORT,), {}, (endpoint(mini_lab.pods["web-3"]),))
    netns = mini_lab.netns("client-0")
    dns.write_hosts(netns, dns.render_hosts(client, [web]))
    servicelb.apply_rules(netns, servicelb.render_rules([web]))
    code, out = run_logged(mini_lab, "client-0", [sys.executable, "-c", CLIENT])
    assert code == 0, out
    assert out.split() == ["web-3", client.ip]
