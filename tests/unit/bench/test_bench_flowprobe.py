"""flowprobe's command line: targets are NAME=URL, anything else is refused clearly."""

from __future__ import annotations

import pytest

from hybridmesh.bench.flowprobe import main, parse_targets


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
