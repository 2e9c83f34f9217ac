"""Kubernetes quantities ("500m", "128Mi") and Go-style durations ("1h30m", "500ms").

Users copy these from Kubernetes manifests, so they are parsed exactly as Kubernetes and
Go parse them (integer arithmetic through :class:`~decimal.Decimal`, no float rounding), and
each parser raises :class:`ValueError` with a message that says what a valid value looks like.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from hybridmesh.resources._names import quote

__all__ = ["format_duration", "parse_cpu_millis", "parse_duration", "parse_memory_bytes"]

_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_HINT = 'use a number with a unit (h, m, s, ms, us, ns), e.g. "24h", "1m30s" or "500ms"'

_MEMORY_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?([a-zA-Z]*)")
_MEMORY_HINT = 'use bytes or a suffix (Ki, Mi, Gi, Ti, k, M, G, T), e.g. "128Mi" or "1G"'
_CPU_HINT = 'use cores or millicores, e.g. "1", "0.5" or "500m"'


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration ("24h", "2m30s", "1.5h", "500ms"); negative durations are refused."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string, got {quote(text)}; {_DURATION_HINT}")
    if text == "0":
        return timedelta(0)
    pos, total_ns = 0, Decimal(0)
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise ValueError(f"invalid duration {quote(text)}; {_DURATION_HINT}")
        total_ns += Decimal(match.group(1)) * _DURATION_UNITS_NS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"invalid duration {quote(text)}; {_DURATION_HINT}")
    micros = int((total_ns / 1000).to_integral_value(rounding=ROUND_CEILING))
    try:
        return timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"duration {quote(text)} is too long") from None


def format_duration(value: timedelta) -> str:
    """The shortest Go-style spelling of ``value`` ("1h30m", "2m30s", "500ms", "0s")."""
    micros = value // timedelta(microseconds=1)
    if micros == 0:
        return "0s"
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, rest = divmod(rest, 1_000_000)
    millis, micros_left = divmod(rest, 1000)
    parts = [(hours, "h"), (minutes, "m"), (seconds, "s"), (millis, "ms"), (micros_left, "us")]
    return sign + "".join(f"{n}{unit}" for n, unit in parts if n)


def _number(text: str, what: str, hint: str) -> tuple[Decimal, str]:
    """Split a Kubernetes quantity into its decimal value and its suffix."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None or not text.strip():
        raise ValueError(f"invalid {what} quantity {quote(text)}; {hint}")
    mantissa, exponent, suffix = match.groups()
    if exponent and abs(int(exponent)) > 24:
        raise ValueError(f"{quote(text)} is out of range")
    try:
        value = Decimal(mantissa).scaleb(int(exponent or 0))
    except (InvalidOperation, ValueError):
        raise ValueError(f"invalid {what} quantity {quote(text)}; {hint}") from None
    if exponent and suffix:
        raise ValueError(f"invalid {what} quantity {quote(text)}; {hint}")
    return value, suffix


def _as_text(value: object, what: str, hint: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid {what} quantity {quote(value)}; {hint}")
    return str(value)


def parse_cpu_millis(value: object) -> int:
    """Kubernetes CPU ("500m", "1", "0.5", 2) in millicores; at least 1m, whole millicores."""
    text = _as_text(value, "cpu", _CPU_HINT)
    number, suffix = _number(text, "cpu", _CPU_HINT)
    if suffix not in ("", "m"):
        raise ValueError(f"invalid cpu quantity {quote(text)}; {_CPU_HINT}")
    millis = number if suffix == "m" else number * 1000
    if millis != millis.to_integral_value():
        raise ValueError(f"{quote(text)} is finer than 1m (a thousandth of a core)")
    if millis < 1:
        raise ValueError(f"{quote(text)} is too small; use at least 1m")
    return int(millis)


def parse_memory_bytes(value: object) -> int:
    """Kubernetes memory ("128Mi", "1Gi", "1G", "1000", 512) in bytes, rounded up; > 0."""
    text = _as_text(value, "memory", _MEMORY_HINT)
    number, suffix = _number(text, "memory", _MEMORY_HINT)
    if suffix not in _MEMORY_SUFFIXES:
        raise ValueError(f"invalid memory quantity {quote(text)}; {_MEMORY_HINT}")
    result = int((number * _MEMORY_SUFFIXES[suffix]).to_integral_value(rounding=ROUND_CEILING))
    if result < 1:
        raise ValueError(f"{quote(text)} is too small; use at least 1 byte")
    return result
