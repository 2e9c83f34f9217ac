from __future__ import annotations

import io

from rich.console import Console

from hybridmesh.doctor import Check, CheckResult, Outcome, Report
from hybridmesh.doctor.render import render


def result(category: str, name: str, ok: bool, detail: str, *, fatal: bool = True) -> CheckResult:
    check = Check(category, name, f"fix {name}", fatal, lambda session: Outcome(ok, detail))
    return CheckResult(check, Outcome(ok, detail))


def rendered(report: Report) -> str:
    out = io.StringIO()
    render(report, Console(file=out, width=200, color_system=None, force_terminal=False))
    return out.getvalue()


def test_linkerd_shaped_output_with_pass_warning_and_failure() -> None:
    report = Report(
        (
            result("kernel", "kernel is new", True, "6.1.0"),
            result("kernel", "bpffs mounted", False, "not mounted", fatal=False),
            result("network", "netns work", False, "EPERM"),
            result("network", "quiet", True, ""),
        )
    )

    assert rendered(report) == (
        "kernel\n"
        "------\n"
        "√ kernel is new — 6.1.0\n"
        "‼ bpffs mounted\n"
        "    not mounted\n"
        "    hint: fix bpffs mounted\n"
        "\n"
        "network\n"
        "-------\n"
        "× netns work\n"
        "    EPERM\n"
        "    hint: fix netns work\n"
        "√ quiet\n"
        "\n"
        "Status check results are × (2 passed, 1 warning, 1 failed)\n"
    )


def test_all_passing_ends_with_a_tick() -> None:
    report = Report((result("kernel", "kernel is new", True, "6.1.0"),))

    assert rendered(report).endswith("Status check results are √ (1 passed)\n")


def test_warnings_alone_still_pass() -> None:
    report = Report(
        (
            result("tools", "wrk", False, "", fatal=False),
            result("tools", "hey", False, "", fatal=False),
        )
    )

    assert rendered(report).endswith("Status check results are √ (0 passed, 2 warnings)\n")


def test_details_are_printed_verbatim_not_as_markup() -> None:
    report = Report((result("network", "iptables", False, "[bold]line 2[/bold] failed"),))

    assert "    [bold]line 2[/bold] failed\n" in rendered(report)
