"""Name syntax checks (DNS labels, label keys, SPIFFE IDs, Istio wildcards).

Each check raises :class:`ValueError` whose text is the whole user-facing explanation,
because pydantic passes it through and the loader prints it next to the line.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable

__all__ = [
    "check_dns_label",
    "check_label_key",
    "check_label_value",
    "check_principal",
    "check_wildcard",
    "did_you_mean",
    "one_of",
    "quote",
    "repeated",
]

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_SPIFFE_ID = re.compile(r"spiffe://[^/*]+/ns/[^/*]+/sa/[^/*]+")
_MAX_LABEL = 63


def quote(value: object) -> str:
    """A value for a message: strings in double quotes (JSON style), the rest as is."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def repeated(values: Iterable[object]) -> list[str]:
    """The values that occur more than once, as sorted text (for "declared twice" messages)."""
    seen: set[object] = set()
    twice: set[str] = set()
    for value in values:
        if value in seen:
            twice.add(str(value))
        seen.add(value)
    return sorted(twice)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``word`` (case-insensitive), if any is close enough."""
    options = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(options), n=1, cutoff=0.6)
    return options[close[0]] if close else None


def one_of(choices: Iterable[str]) -> str:
    """``a, b, c`` for messages that list the allowed values."""
    return ", ".join(choices)


def _label_hint(value: str, pattern: re.Pattern[str]) -> str:
    fixed = re.sub(r"[^-a-z0-9]+", "-", value.lower()).strip("-")
    fixed = fixed[:_MAX_LABEL].rstrip("-")
    return f'; try "{fixed}"' if fixed and pattern.fullmatch(fixed) else ""


def check_dns_label(value: str) -> str:
    """RFC 1123 label: what Kubernetes requires of namespaces and most object names."""
    if len(value) > _MAX_LABEL or not DNS_LABEL.fullmatch(value):
        raise ValueError(
            f'"{value}" is not a valid DNS label (lowercase letters, digits and "-", '
            f'starting and ending with a letter or digit, at most 63 characters)'
            + _label_hint(value, DNS_LABEL)
        )
    return value


def check_label_key(key: str) -> str:
    """Kubernetes label key: ``[prefix/]name`` with a DNS-subdomain prefix."""
    prefix, _, name = key.rpartition("/")
    bad_prefix = bool(prefix) and (len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix))
    if bad_prefix or len(name) > _MAX_LABEL or not _LABEL_NAME.fullmatch(name):
        raise ValueError(
            f'label key "{key}" is invalid: use [prefix/]name where name is at most 63 letters, '
            f'digits, "-", "_" or ".", starting and ending with a letter or digit'
        )
    return key


def check_label_value(key: str, value: str) -> str:
    """Kubernetes label value: empty, or like a label name."""
    if value and (len(value) > _MAX_LABEL or not _LABEL_NAME.fullmatch(value)):
        raise ValueError(
            f'label "{key}" has invalid value "{value}": use at most 63 letters, digits, '
            f'"-", "_" or ".", starting and ending with a letter or digit'
        )
    return value


def check_wildcard(value: str) -> str:
    """Istio string match: exact, ``prefix*``, ``*suffix`` or ``*`` — no other ``*``."""
    inner = value[1:] if value.startswith("*") else value
    inner = inner[:-1] if inner.endswith("*") and not value.startswith("*") else inner
    if not value or "*" in inner:
        raise ValueError(
            f'"{value}" is not a valid match: use an exact value, "prefix*", '
            f'"*suffix" or "*" (a single "*" only at the start or the end)'
        )
    return value


def check_principal(value: str) -> str:
    """A SPIFFE ID ``spiffe://<trust-domain>/ns/<ns>/sa/<sa>``, with Istio-style wildcards."""
    check_wildcard(value)
    if value.startswith("*") or _SPIFFE_ID.fullmatch(value):
        return value
    if value.endswith("*") and ("spiffe://".startswith(value[:-1]) or value.startswith("spiffe://")):
        return value
    hint = 'e.g. "spiffe://cluster.local/ns/shop/sa/web"'
    if not value.startswith("spiffe://") and _SPIFFE_ID.fullmatch("spiffe://" + value):
        hint = f'did you mean "spiffe://{value}"?'
    raise ValueError(
        f'"{value}" is not a SPIFFE ID like spiffe://<trust-domain>/ns/<namespace>/sa/'
        f"<service-account>; {hint}"
    )
