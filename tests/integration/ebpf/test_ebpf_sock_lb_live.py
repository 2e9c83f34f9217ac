"""sock_lb for real: built, loaded, attached to a cgroup; clients in a netns connect to a VIP."""

from __future__ import annotations

import os
import time
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from ebpf_env import BACKENDS, PORT, VIP, Netns

from hybridmesh.ebpf import _libbpf
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.ebpf.sock_lb import Service, ServiceStats, SockLB

pytestmark = pytest.mark.privileged

SVC_PORT = 80  # nothing listens on VIP:80, so an unbalanced connect is refused
BACKEND_ADDRS = [(b, PORT) for b in BACKENDS]
REPLIES = {f"{b}:{PORT}" for b in BACKENDS}


def test_connects_reach_both_backends_and_peer_is_the_vip(lb: SockLB, netns: Netns,
                                                          cgroup: Path) -> None:  # fmt: skip
    lb.set_service(VIP, SVC_PORT, BACKEND_ADDRS)
    seen = netns.connect(cgroup, VIP, SVC_PORT, count=40)
    assert [s["error"] for s in seen] == [None] * 40
    replies = Counter(s["reply"] for s in seen)
    assert set(replies) == REPLIES, replies  # every backend used; P(miss one) = 2^-39
    assert {s["peer"] for s in seen} == {f"{VIP}:{SVC_PORT}"}
    assert lb.stats() == {Service(IPv4Address(VIP), SVC_PORT): ServiceStats(40, 0)}


def test_without_the_service_connect_goes_to_the_vip(lb: SockLB, netns: Netns,
                                                     cgroup: Path) -> None:  # fmt: skip
    lb.set_service(VIP, PORT, BACKEND_ADDRS[:1])
    lb.set_service(VIP, SVC_PORT, BACKEND_ADDRS)
    assert netns.connect(cgroup, VIP, PORT)[0]["reply"] == f"{BACKENDS[0]}:{PORT}"
    assert lb.delete_service(VIP, PORT)
    assert lb.delete_service(VIP, SVC_PORT)
    assert not lb.delete_service(VIP, SVC_PORT)
    assert netns.connect(cgroup, VIP, PORT)[0] == {
        "reply": f"{VIP}:{PORT}",  # the peer listening on the VIP itself answered
        "peer": f"{VIP}:{PORT}",
        "error": None,
    }
    assert netns.connect(cgroup, VIP, SVC_PORT)[0]["error"] == "ECONNREFUSED"  # nothing there
    assert lb.services() == {}


def test_a_service_without_backends_refuses(lb: SockLB, netns: Netns, cgroup: Path) -> None:
    lb.set_service(VIP, PORT, BACKEND_ADDRS)
    lb.set_service(VIP, PORT, [])  # a listener on VIP:PORT exists: the refusal is the hook's
    seen = netns.connect(cgroup, VIP, PORT, count=3)
    assert [s["error"] for s in seen] == ["ECONNREFUSED"] * 3
    assert lb.stats()[Service(IPv4Address(VIP), PORT)] == ServiceStats(0, 3)
    assert lb.services() == {Service(IPv4Address(VIP), PORT): []}
    lb.set_service(VIP, PORT, BACKEND_ADDRS[1:])
    assert netns.connect(cgroup, VIP, PORT)[0]["reply"] == f"{BACKENDS[1]}:{PORT}"


def test_shrinking_a_service_deletes_surplus_slots(lb: SockLB, netns: Netns,
                                                   cgroup: Path) -> None:  # fmt: skip
    lb.set_service(VIP, SVC_PORT, BACKEND_ADDRS)
    lb.set_service(VIP, SVC_PORT, BACKEND_ADDRS[1:])
    assert len(list(lb.backends_map.keys())) == 1
    seen = netns.connect(cgroup, VIP, SVC_PORT, count=10)
    assert {s["reply"] for s in seen} == {f"{BACKENDS[1]}:{PORT}"}


def test_only_the_attached_cgroup_is_balanced(lb: SockLB, netns: Netns) -> None:
    lb.set_service(VIP, SVC_PORT, BACKEND_ADDRS)
    assert netns.connect(None, VIP, SVC_PORT)[0]["error"] == "ECONNREFUSED"


def test_rodata_selects_the_protocols(lb: SockLB, netns: Netns, cgroup: Path,
                                      pin_dir: Path) -> None:  # fmt: skip
    """lb_protocols (a const volatile global) is set before load: TCP-only leaves UDP alone."""
    lb.set_service(VIP, SVC_PORT, BACKEND_ADDRS, protocol="udp")
    tcp_only = netns.connect(cgroup, VIP, SVC_PORT, proto="udp")[0]
    assert tcp_only["error"] == "ECONNREFUSED"  # ICMP port unreachable from VIP:80
    lb.detach()
    lb.close()
    both = SockLB.load(pin_dir, protocols=("tcp", "udp"))  # same pinned maps, new rodata
    try:
        both.attach(cgroup)
        seen = netns.connect(cgroup, VIP, SVC_PORT, count=10, proto="udp")
        assert {s["reply"] for s in seen} <= REPLIES
        assert {s["peer"] for s in seen} == {f"{VIP}:{SVC_PORT}"}
    finally:
        both.detach()
        both.close()


def test_restarted_loader_reuses_pinned_maps_and_links(pin_dir: Path, cgroup: Path,
                                                       netns: Netns) -> None:  # fmt: skip
    first = SockLB.load(pin_dir)
    first.attach(cgroup)
    first.set_service(VIP, SVC_PORT, BACKEND_ADDRS[:1])
    assert netns.connect(cgroup, VIP, SVC_PORT)[0]["reply"] == f"{BACKENDS[0]}:{PORT}"
    first.close()  # the agent goes away: pins keep the maps and the attachment
    assert netns.connect(cgroup, VIP, SVC_PORT)[0]["reply"] == f"{BACKENDS[0]}:{PORT}"

    stats_fd = _libbpf.enable_run_stats()
    second = SockLB.load(pin_dir)
    try:
        assert second.attached() == [os.stat(cgroup).st_ino]
        assert second.services() == {
            Service(IPv4Address(VIP), SVC_PORT): [(IPv4Address(BACKENDS[0]), PORT)]
        }
        assert second.stats()[Service(IPv4Address(VIP), SVC_PORT)].connects == 2
        second.set_service(VIP, SVC_PORT, BACKEND_ADDRS[1:])
        assert netns.connect(cgroup, VIP, SVC_PORT)[0]["reply"] == f"{BACKENDS[1]}:{PORT}"
        assert second.program_stats()["connect4"].run_cnt == 1  # the link runs the new program
        second.detach()
        assert second.attached() == []
        assert netns.connect(cgroup, VIP, SVC_PORT)[0]["error"] == "ECONNREFUSED"
    finally:
        os.close(stats_fd)
        second.close()


def test_run_stats_count_every_connect(lb: SockLB, netns: Netns, cgroup: Path) -> None:
    lb.set_service(VIP, SVC_PORT, BACKEND_ADDRS)
    stats_fd = _libbpf.enable_run_stats()
    try:
        before = lb.program_stats()
        netns.connect(cgroup, VIP, SVC_PORT, count=50)
        after = lb.program_stats()
    finally:
        os.close(stats_fd)
    connects = after["connect4"].run_cnt - before["connect4"].run_cnt
    peers = after["getpeername4"].run_cnt - before["getpeername4"].run_cnt
    assert (connects, peers) == (50, 50)
    ns = (after["connect4"].run_time_ns - before["connect4"].run_time_ns) / connects
    print(f"connect4: {ns:.0f} ns/run over {connects} runs")
    assert 0 < ns < 1_000_000


def test_attach_to_a_missing_cgroup_is_a_typed_error(lb: SockLB, tmp_path: Path) -> None:
    with pytest.raises(BpfError, match="cgroup"):
        lb.attach(tmp_path / "hm-no-such-cgroup")


def test_attach_twice_keeps_one_link(lb: SockLB, cgroup: Path) -> None:
    lb.attach(cgroup)
    assert lb.attached() == [os.stat(cgroup).st_ino]
    assert len(list(lb.pin_dir.glob("link-*"))) == 2


def test_links_of_removed_cgroups_are_dropped_on_reload(pin_dir: Path, cgroup: Path) -> None:
    """A pod removed while the agent was down leaves a severed link pin: reload cleans it."""
    gone = cgroup / "hm-gone"
    gone.mkdir()
    first = SockLB.load(pin_dir)
    first.attach(cgroup)
    first.attach(gone)
    first.close()
    gone.rmdir()  # the kernel severs the cgroup's links later, from a workqueue
    deadline = time.monotonic() + 5
    second = SockLB.load(pin_dir)
    while len(second.attached()) > 1 and time.monotonic() < deadline:
        second.close()
        time.sleep(0.05)
        second = SockLB.load(pin_dir)
    try:
        assert second.attached() == [os.stat(cgroup).st_ino]
        second.detach()
        assert list(pin_dir.glob("link-*")) == []
    finally:
        second.close()
