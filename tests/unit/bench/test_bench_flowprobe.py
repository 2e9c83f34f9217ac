"""flowprobe's command line: targets are NAME=URL, anything else is refused clearly."""

from __future__ import annotations

import json

import pytest

from hybridmesh.bench.flowprobe import healthy, main, parse_targets


def test_targets_are_name_url_pairs() -> None:
    assert parse_targets(["a=http://blast-a/", "b=http://blast-b:8080/x"]) == {
        "a": "http://blast-a/",
        "b": "http://blast-b:8080/x",
    }


@pytest.mark.parametrize("bad", ["http://blast-a/", "a=", "=http://x/", "a=https://x/"])
def test_a_bad_target_names_itself(bad: str) -> None:
    with pytest.raises(ValueError, match="NAME=http://"):
        parse_targets([bad])


def test_bad_command_lines_exit_2_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--target", "nope", "--rate", "10", "--out", "/tmp/x.json"])
    assert exc.value.code == 2
    assert "NAME=http://" in capsys.readouterr().err


def _line(at: float, ok: dict[str, int], failed: dict[str, int]) -> str:
    return json.dumps({"at": at, "ok": ok, "failed": failed})


def test_healthy_wants_new_successes_and_no_new_failures_on_every_path() -> None:
    start = '{"started": 1.0, "targets": ["a", "b"]}'
    a = _line(1.25, {"a": 5, "b": 0}, {"a": 0, "b": 5})
    b = _line(1.5, {"a": 10, "b": 3}, {"a": 0, "b": 5})
    c = _line(1.75, {"a": 15, "b": 3}, {"a": 0, "b": 5})
    d = _line(2.0, {"a": 20, "b": 8}, {"a": 1, "b": 5})
    assert not healthy(start) and not healthy(f"{start}\n{a}")
    assert healthy("\n".join([start, a, b]))  # b recovered: new successes, no new failures
    assert not healthy("\n".join([start, a, b, c]))  # b stalled
    assert not healthy("\n".join([start, c, d]))  # a failed again
