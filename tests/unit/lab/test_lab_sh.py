"""The command runner: failures say which command failed and what it printed."""

from __future__ import annotations

import pytest

from hybridmesh.lab import _sh
from hybridmesh.lab._sh import LabError


def test_run_returns_stdout() -> None:
    assert _sh.run(["sh", "-c", "echo hello"]) == "hello\n"


def test_failure_names_the_command_exit_status_and_stderr() -> None:
    with pytest.raises(LabError) as info:
        _sh.run(["sh", "-c", "echo 'RTNETLINK answers: Operation not permitted' >&2; exit 2"])
    message = str(info.value)
    assert "exit 2" in message and "sh -c" in message
    assert "Operation not permitted" in message
    assert info.value.hint is not None and "root" in info.value.hint


def test_missing_tool_is_a_lab_error_with_a_hint() -> None:
    with pytest.raises(LabError, match="not installed"):
        _sh.run(["hm-no-such-tool"])


def _fake_run(stderr: str) -> object:
    def run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> str:
        raise LabError(f"`{' '.join(argv)}` failed (exit 1): {stderr}")

    return run


def test_ip_batch_tolerates_only_the_lines_it_was_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sh, "run", _fake_run('Cannot find device "hm-x"\nCommand failed -:1'))
    _sh.ip_batch("hm-ns", ["link del hm-x", "link add hm-x type bridge"], tolerate={0})
    monkeypatch.setattr(_sh, "run", _fake_run("RTNETLINK answers: File exists\nCommand failed -:2"))
    with pytest.raises(LabError, match="link add hm-x type bridge"):
        _sh.ip_batch("hm-ns", ["link del hm-x", "link add hm-x type bridge"], tolerate={0})


def test_in_netns_enters_only_the_network_namespace() -> None:
    argv = _sh.in_netns("hm-pod-a", ["iptables-save"])
    assert argv[:2] == ["nsenter", "--net=/run/netns/hm-pod-a"]
    assert argv[-1].endswith("iptables-save")
    assert _sh.in_netns(None, ["iptables-save"]) == ["iptables-save"]
