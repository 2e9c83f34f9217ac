"""Kubernetes quantities and Go durations parse exactly as Kubernetes and Go do."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.resources import (
    format_duration,
    parse_cpu_millis,
    parse_duration,
    parse_memory_bytes,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("2m30s", timedelta(minutes=2, seconds=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5h", timedelta(minutes=90)),
        ("1h0m0s", timedelta(hours=1)),
        ("250us", timedelta(microseconds=250)),
        ("250µs", timedelta(microseconds=250)),
        ("1500ns", timedelta(microseconds=2)),  # rounded up: never silently zero
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "1 h", "-5s", "1d", "h", "1h-5m", "5sec", "1e3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(hours=24), "24h"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(minutes=2, seconds=30), "2m30s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(milliseconds=1500), "1s500ms"),
        (timedelta(0), "0s"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10_000)))
def test_format_then_parse_is_identity(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("value", "millis"),
    [("500m", 500), ("1", 1000), ("0.5", 500), (2, 2000), (0.25, 250), ("1.5", 1500), ("1m", 1)],
)
def test_cpu(value: object, millis: int) -> None:
    assert parse_cpu_millis(value) == millis


@pytest.mark.parametrize("value", ["2 cores", "", "500M", "0", "0.0001", "-1", True, None, "1Ki"])
def test_bad_cpu(value: object) -> None:
    with pytest.raises(ValueError, match=r"cpu|too small|finer"):
        parse_cpu_millis(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("128Mi", 128 * 2**20),
        ("1Gi", 2**30),
        ("512Ki", 512 * 1024),
        ("1G", 10**9),
        ("1k", 1000),
        ("1000", 1000),
        (4096, 4096),
        ("1.5Gi", 3 * 2**29),
        ("129e6", 129_000_000),
    ],
)
def test_memory(value: object, size: int) -> None:
    assert parse_memory_bytes(value) == size


@pytest.mark.parametrize("value", ["1GB", "lots", "", "0", "1e99", "-1Mi", 1.5j, False])
def test_bad_memory(value: object) -> None:
    with pytest.raises(ValueError, match=r"memory|too small|out of range"):
        parse_memory_bytes(value)
