"""Certificate validity times are parsed by hand (not ``strptime``: ~70 KB per proxy):
RFC 5280 UTCTime/GeneralizedTime, and anything else is a ``DerError``."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from hybridmesh.identity._der import _GENERALIZED_TIME, _UTC_TIME, DerError, _time, _Tlv


def _parse(tag: int, text: str) -> datetime:
    data = text.encode()
    return _time(data, _Tlv(tag, 0, 0, len(data)))


@pytest.mark.parametrize(("tag", "text", "expected"), [
    (_UTC_TIME, "490101000000Z", datetime(2049, 1, 1, tzinfo=UTC)),
    (_UTC_TIME, "500101000000Z", datetime(1950, 1, 1, tzinfo=UTC)),  # RFC 5280 pivot
    (_UTC_TIME, "251231235959Z", datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)),
    (_GENERALIZED_TIME, "20510601120000Z", datetime(2051, 6, 1, 12, tzinfo=UTC)),
])
def test_valid_times(tag: int, text: str, expected: datetime) -> None:
    assert _parse(tag, text) == expected


@pytest.mark.parametrize(("tag", "text"), [
    (_UTC_TIME, "20510601120000Z"),  # GeneralizedTime length under the UTCTime tag
    (_GENERALIZED_TIME, "510601120000Z"),
    (_UTC_TIME, "251231235959"),  # no Z
    (_UTC_TIME, "251231235959+0100"),
    (_UTC_TIME, "2512312359５９Z"),  # a non-ASCII digit
    (_UTC_TIME, "25123123595 Z"),
    (_UTC_TIME, "251331000000Z"),  # month 13
    (_GENERALIZED_TIME, "20250230000000Z"),  # 30 February
    (0x04, "251231235959Z"),  # not a time tag
])
def test_malformed_times_are_der_errors(tag: int, text: str) -> None:
    with pytest.raises(DerError):
        _parse(tag, text)


def test_parsing_times_does_not_import_strptime() -> None:
    script = ("import sys; from hybridmesh.identity._der import _time, _Tlv\n"
              "_time(b'251231235959Z', _Tlv(0x17, 0, 0, 13))\n"
              "print('_strptime' in sys.modules, 'calendar' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=30)
    assert out.stdout.split() == ["False", "False"]
