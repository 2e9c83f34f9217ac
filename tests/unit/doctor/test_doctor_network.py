from __future__ import annotations

import dataclasses

from doctor_fakes import NETNS, FakeRunner

from hybridmesh.doctor import CommandResult, Host, Session
from hybridmesh.doctor._network import (
    NAT_PROBE_RULES,
    probe_iptables_nat,
    probe_netns,
    probe_veth,
)
from hybridmesh.doctor.checks import CHECKS, run_check

REFUSED = CommandResult(2, stderr="mount --make-shared /run/netns failed: Operation not permitted")


def with_runner(host: Host, runner: FakeRunner) -> Session:
    return Session(dataclasses.replace(host, run=runner))


def test_netns_is_created_used_and_deleted(healthy_host: Host, runner: FakeRunner) -> None:
    outcome = probe_netns(Session(healthy_host))

    assert outcome.ok
    assert runner.commands() == [
        ("ip", "netns", "add", NETNS),
        ("ip", "-n", NETNS, "link", "set", "lo", "up"),
        ("ip", "netns", "del", NETNS),
    ]


def test_netns_that_cannot_be_created_says_why_and_stops(healthy_host: Host) -> None:
    runner = FakeRunner(fail={("netns", "add"): REFUSED})

    outcome = probe_netns(with_runner(healthy_host, runner))

    assert not outcome.ok
    assert "Operation not permitted" in outcome.detail
    assert runner.count("netns", "del") == 0


def test_netns_is_deleted_even_when_using_it_fails(healthy_host: Host) -> None:
    runner = FakeRunner(fail={("link", "set", "lo"): CommandResult(1, stderr="RTNETLINK: nope")})

    outcome = probe_netns(with_runner(healthy_host, runner))

    assert not outcome.ok
    assert "RTNETLINK: nope" in outcome.detail
    assert runner.count("netns", "del", NETNS) == 1


def test_netns_that_cannot_be_deleted_fails(healthy_host: Host) -> None:
    runner = FakeRunner(fail={("netns", "del"): CommandResult(1, stderr="Device busy")})

    outcome = probe_netns(with_runner(healthy_host, runner))

    assert not outcome.ok
    assert outcome.detail == f"created {NETNS} but cannot delete it: Device busy"


def test_veth_pair_is_made_inside_the_scratch_netns(healthy_host: Host, runner: FakeRunner) -> None:
    with Session(healthy_host) as session:
        outcome = probe_veth(session)

    assert outcome.ok
    add = ("ip", "-n", NETNS, "link", "add", "hm-ck-a", "type", "veth", "peer", "name", "hm-ck-b")
    assert runner.commands() == [
        ("ip", "netns", "add", NETNS),
        add,
        ("ip", "-n", NETNS, "link", "del", "hm-ck-a"),
        ("ip", "netns", "del", NETNS),
    ]


def test_veth_failure_reports_it_and_still_removes_the_netns(healthy_host: Host) -> None:
    runner = FakeRunner(fail={("type", "veth"): CommandResult(2, stderr="Unknown device type.")})

    with with_runner(healthy_host, runner) as session:
        outcome = probe_veth(session)

    assert not outcome.ok
    assert "Unknown device type." in outcome.detail
    assert runner.count("netns", "del", NETNS) == 1


def test_no_scratch_netns_fails_the_checks_that_need_it(healthy_host: Host) -> None:
    runner = FakeRunner(fail={("netns", "add"): REFUSED})
    veth = next(c for c in CHECKS if c.probe is probe_veth)

    with with_runner(healthy_host, runner) as session:
        result = run_check(veth, session)

    assert not result.ok
    assert result.outcome.detail.startswith(f"cannot create network namespace {NETNS}")
    assert runner.count("netns", "del") == 0


def test_iptables_nat_rule_is_restored_and_listed_in_the_netns(
    healthy_host: Host, runner: FakeRunner
) -> None:
    runner.stdout[("-t", "nat", "-S")] = "-P OUTPUT ACCEPT\n-A OUTPUT -j REDIRECT --to-ports 15001"

    with Session(healthy_host) as session:
        outcome = probe_iptables_nat(session)

    assert outcome.ok
    assert outcome.detail == f"REDIRECT rule loaded and listed in {NETNS} (nf_tables)"
    restore = [(w, s) for w, s in runner.calls if "iptables-restore" in w]
    assert restore == [
        (("ip", "netns", "exec", NETNS, "iptables-restore", "--noflush"), NAT_PROBE_RULES)
    ]
    assert "*nat" in NAT_PROBE_RULES
    assert "REDIRECT --to-ports 15001" in NAT_PROBE_RULES


def test_iptables_restore_failure_is_reported(healthy_host: Host) -> None:
    failed = CommandResult(1, stderr="iptables-restore: line 2 failed")
    runner = FakeRunner(fail={("iptables-restore",): failed})

    with with_runner(healthy_host, runner) as session:
        outcome = probe_iptables_nat(session)

    assert not outcome.ok
    assert "line 2 failed" in outcome.detail


def test_a_rule_that_is_not_listed_back_fails(healthy_host: Host, runner: FakeRunner) -> None:
    runner.stdout[("-t", "nat", "-S")] = "-P OUTPUT ACCEPT\n"

    with Session(healthy_host) as session:
        outcome = probe_iptables_nat(session)

    assert not outcome.ok
    assert "not listed back" in outcome.detail
