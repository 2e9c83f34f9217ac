"""Hosts files with Kubernetes DNS names, rewritten in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridmesh.control.model import PodInfo, ServiceInfo, ServicePortInfo
from hybridmesh.lab import dns

POD = PodInfo("client-0", "shop", "client", 0, "node-1", "10.244.1.7", "client", "none")
PORTS = (ServicePortInfo("http", 80, 8080, "http"),)
WEB = ServiceInfo("web", "shop", "10.96.0.10", PORTS, {"app": "web"})
DB = ServiceInfo("db", "data", "10.96.0.12", PORTS, {"app": "db"})


def hosts_entries(text: str) -> dict[str, str]:
    """name -> address, as a resolver reading the file would see it."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            address, *names = line.split()
            for name in names:
                entries.setdefault(name, address)
    return entries


def test_own_namespace_services_resolve_by_every_kubernetes_name() -> None:
    entries = hosts_entries(dns.render_hosts(POD, [WEB, DB]))
    for name in ("web", "web.shop", "web.shop.svc", "web.shop.svc.cluster.local"):
        assert entries[name] == "10.96.0.10"


def test_other_namespace_services_need_their_namespace() -> None:
    entries = hosts_entries(dns.render_hosts(POD, [WEB, DB]))
    for name in ("db.data", "db.data.svc", "db.data.svc.cluster.local"):
        assert entries[name] == "10.96.0.12"
    assert "db" not in entries


def test_localhost_and_own_hostname() -> None:
    entries = hosts_entries(dns.render_hosts(POD, []))
    assert entries["localhost"] == "127.0.0.1"
    assert entries["client-0"] == "10.244.1.7"


def test_cluster_domain_is_configurable_and_headless_services_are_left_out() -> None:
    headless = ServiceInfo("raw", "shop", "None", PORTS, {})
    entries = hosts_entries(dns.render_hosts(POD, [WEB, headless], cluster_domain="lab.test"))
    assert entries["web.shop.svc.lab.test"] == "10.96.0.10"
    assert "raw" not in entries


def test_write_hosts_rewrites_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns, "ETC_NETNS", tmp_path)
    dns.write_hosts("hm-pod-shop-client-0", "a much longer first version of the file\n")
    hosts = tmp_path / "hm-pod-shop-client-0" / "hosts"
    inode = hosts.stat().st_ino
    dns.write_hosts("hm-pod-shop-client-0", "short\n")
    assert hosts.read_text() == "short\n"  # no tail of the old text left
    assert hosts.stat().st_ino == inode  # same file: bind mounts of it see the update


def test_resolv_conf_points_at_the_pods_own_loopback(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns, "ETC_NETNS", tmp_path)
    dns.write_hosts("hm-pod-x", "")
    resolv = (tmp_path / "hm-pod-x" / "resolv.conf").read_text()
    assert "nameserver 127.0.0.1" in resolv and "search" not in resolv
