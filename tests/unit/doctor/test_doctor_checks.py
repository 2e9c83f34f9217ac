from __future__ import annotations

import dataclasses
import itertools

import pytest
from doctor_fakes import NETNS, FakeRunner

from hybridmesh.doctor import (
    CHECKS,
    Check,
    CheckResult,
    CommandResult,
    Host,
    Outcome,
    ProbeError,
    Report,
    Session,
    run_check,
    run_checks,
)


def check(
    name: str = "thing works", *, fatal: bool = True, outcome: Outcome | None = None
) -> Check:
    result = outcome or Outcome.passed("fine")
    return Check("cat", name, "do the thing", fatal, lambda session: result)


def test_every_check_in_the_table_is_complete_and_unique() -> None:
    assert len({c.name for c in CHECKS}) == len(CHECKS)
    for c in CHECKS:
        assert c.category
        assert c.name
        assert c.hint


def test_categories_are_contiguous_so_output_groups_them() -> None:
    order = [category for category, _ in itertools.groupby(c.category for c in CHECKS)]

    assert order == ["privileges", "kernel", "ebpf", "cgroups", "network", "tools", "libraries"]


def test_only_bpffs_ebpf_types_load_generators_and_compiled_modules_are_non_fatal() -> None:
    non_fatal = {c.name.split()[0] for c in CHECKS if not c.fatal}

    # "proxy": the compiled hot path (hybridmesh/native) — without it the proxy is slower only
    assert non_fatal == {"bpffs", "program", "map", "h2load", "wrk", "hey", "curl", "proxy"}


def test_a_probe_error_becomes_the_detail(healthy_host: Host) -> None:
    def probe(session: Session) -> Outcome:
        raise ProbeError("no such thing")

    result = run_check(dataclasses.replace(check(), probe=probe), Session(healthy_host))

    assert result.outcome == Outcome.failed("no such thing")


def test_a_crashing_probe_is_a_failed_check_not_a_traceback(healthy_host: Host) -> None:
    def probe(session: Session) -> Outcome:
        raise KeyError("boom")

    result = run_check(dataclasses.replace(check(), probe=probe), Session(healthy_host))

    assert not result.ok
    assert result.outcome.detail == "the check itself failed: KeyError: 'boom'"


@pytest.mark.parametrize(
    ("fatal", "ok", "report_ok", "warning"),
    [(True, True, True, False), (True, False, False, False), (False, False, True, True)],
)
def test_only_a_failed_fatal_check_fails_the_report(
    fatal: bool, ok: bool, report_ok: bool, warning: bool
) -> None:
    result = CheckResult(check(fatal=fatal), Outcome(ok, "d"))

    assert Report((result,)).ok is report_ok
    assert result.is_warning is warning


def test_json_has_exactly_the_documented_shape() -> None:
    report = Report((CheckResult(check(fatal=False), Outcome.failed("missing")),))

    assert report.to_json() == {
        "ok": True,
        "checks": [
            {
                "category": "cat",
                "name": "thing works",
                "ok": False,
                "fatal": False,
                "detail": "missing",
                "hint": "do the thing",
            }
        ],
    }


def test_the_whole_table_passes_on_a_healthy_host(healthy_host: Host) -> None:
    report = run_checks(healthy_host)

    failed = [(r.check.name, r.outcome.detail) for r in report.results if not r.ok]
    assert failed == []
    assert report.ok
    assert len(report.results) == len(CHECKS)


def test_not_root_fails_the_report(healthy_host: Host) -> None:
    report = run_checks(dataclasses.replace(healthy_host, euid=lambda: 1000))

    assert not report.ok
    assert [r.check.name for r in report.results if not r.ok] == ["running as root"]


def test_every_namespace_a_run_creates_is_deleted(healthy_host: Host, runner: FakeRunner) -> None:
    run_checks(healthy_host)

    assert runner.count("netns", "add", NETNS) == 2  # the netns check's own, then the scratch one
    assert runner.count("netns", "del", NETNS) == 2
    assert runner.commands()[-1] == ("ip", "netns", "del", NETNS)


def test_without_namespaces_every_network_check_fails(healthy_host: Host) -> None:
    runner = FakeRunner(fail={("netns", "add"): CommandResult(1, stderr="EPERM")})

    report = run_checks(dataclasses.replace(healthy_host, run=runner))

    network = [r for r in report.results if r.check.category == "network"]
    assert [r.ok for r in network] == [False, False, False]
    assert all("EPERM" in r.outcome.detail for r in network)
