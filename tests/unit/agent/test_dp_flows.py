"""dp_flows' pure parts: which pods are followed, and records as client->server FlowEvents."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from hybridmesh.agent.datapath import NodeState, PodView
from hybridmesh.agent.dp_flows import desired_local, events_of, to_event
from hybridmesh.ebpf.flows import Flow

CLIENT = Flow(kind="close", monotonic_ns=1_000, local_ip="10.0.0.1", local_port=40000,
              remote_ip="10.0.0.2", remote_port=80, netns=9, passive=False, seen_open=True,
              bytes_acked=1002, bytes_received=11, srtt_us=52, total_retrans=1,
              duration_ns=5, old_state=5, new_state=7, fin_in=True)  # fmt: skip
SERVER = replace(CLIENT, local_ip="10.0.0.2", local_port=80, remote_ip="10.0.0.1",
                 remote_port=40000, passive=True, bytes_acked=11, bytes_received=1001,
                 old_state=9)  # fmt: skip


def test_an_active_record_keeps_its_direction() -> None:
    event = to_event(CLIENT, 10**18, "n1")
    assert (event.src_ip, event.src_port, event.dst_ip, event.dst_port) == (
        "10.0.0.1", 40000, "10.0.0.2", 80)  # fmt: skip
    assert (event.bytes_sent, event.bytes_received) == (1000, 10)  # no SYN, no FINs
    assert event.time_ns == 10**18 + 1_000
    assert (event.rtt_us, event.retransmits, event.node, event.kind) == (52, 1, "n1", "close")


def test_a_passive_record_is_turned_to_the_client() -> None:
    event = to_event(SERVER, 0, "n1")
    assert (event.src_ip, event.src_port, event.dst_ip, event.dst_port) == (
        "10.0.0.1", 40000, "10.0.0.2", 80)  # fmt: skip
    assert (event.bytes_sent, event.bytes_received) == (1000, 10)  # the client's view


def test_no_rtt_is_none() -> None:
    assert to_event(replace(CLIENT, srtt_us=0), 0, "n1").rtt_us is None


def test_the_accepting_side_between_local_pods_is_dropped() -> None:
    both = frozenset({"10.0.0.1", "10.0.0.2"})
    assert [e.src_port for e in events_of([CLIENT, SERVER], 0, "n1", both)] == [40000]
    only_server = frozenset({"10.0.0.2"})
    assert len(events_of([SERVER], 0, "n1", only_server)) == 1


def test_retransmits_are_kept_from_either_side() -> None:
    both = frozenset({"10.0.0.1", "10.0.0.2"})
    resent = replace(SERVER, kind="retransmit")
    assert [e.kind for e in events_of([resent], 0, "n1", both)] == ["retransmit"]


def pod(name: str, ip: str, placement: str, netns: Path | None, local: bool = True) -> PodView:
    return PodView("ns", name, ip, "n1", "sa", placement,
                   cgroup=Path("/cg") if local else None, netns=netns)  # fmt: skip


def test_desired_local(tmp_path: Path) -> None:
    netns = tmp_path / "ns-file"
    netns.touch()
    pods = (
        pod("a", "10.0.0.1", "kernel", netns),
        pod("b", "10.0.0.2", "sidecar+ebpf", None),  # netns unknown: any namespace
        pod("c", "10.0.0.3", "none", netns),  # the baseline: not followed
        pod("d", "10.0.0.4", "kernel", tmp_path / "gone"),  # netns already removed
        pod("e", "10.0.0.5", "kernel", netns, local=False),  # another node's
        pod("f", "", "kernel", netns),  # no address yet
    )
    state = NodeState("n1", 1, pods, (), ())
    assert desired_local(state) == {(os.stat(netns).st_ino, "10.0.0.1"), (0, "10.0.0.2")}
