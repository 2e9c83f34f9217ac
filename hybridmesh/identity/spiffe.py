"""SPIFFE IDs: strict parsing, canonical form, exact comparison.

A SPIFFE ID is the *name* every authorization decision in the mesh is made on, so this
module accepts exactly one spelling of each identity (the SPIFFE spec's canonical form,
as go-spiffe enforces it) and rejects everything else with a reason. Two IDs are equal
iff their strings are equal: no case folding, no percent-decoding, no dot-segment
removal, no regex and no prefix matching ever takes part in deciding *who* a peer is.
Normalising would let two different strings name one principal (or one string smuggle
in another's name), which is how secure-naming bugs are born.

`SpiffeId.matches` exists only for policy evaluation (Istio-style ``principals``); it
supports a single leading or trailing ``*`` and is exact otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_ID_BYTES",
    "MAX_TRUST_DOMAIN_BYTES",
    "SCHEME_PREFIX",
    "InvalidPrincipalPattern",
    "InvalidSpiffeId",
    "SpiffeId",
    "validate_segment",
    "validate_trust_domain",
]

SCHEME_PREFIX: Final = "spiffe://"
MAX_ID_BYTES: Final = 2048
MAX_TRUST_DOMAIN_BYTES: Final = 255

_TRUST_DOMAIN_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_SEGMENT_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"
)
_SHOWN_CHARS: Final = 120  # how much of a bad input an error message repeats


class InvalidSpiffeId(ValueError):
    """A string (or component) is not a canonical SPIFFE ID; `reason` says why."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        shown = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"
        super().__init__(f"invalid SPIFFE ID {shown!r}: {reason}")


class InvalidPrincipalPattern(ValueError):
    """A policy principal pattern uses a wildcard other than one leading/trailing ``*``."""


def validate_trust_domain(trust_domain: str, *, text: str | None = None) -> None:
    """Raise `InvalidSpiffeId` unless `trust_domain` is a bare, lowercase host name.

    The authority part of a SPIFFE ID may carry neither userinfo nor a port (spec 2.1);
    those get their own reasons because they are the classic confusion attacks.
    """
    shown = trust_domain if text is None else text
    if not trust_domain:
        raise InvalidSpiffeId(shown, "trust domain is empty")
    if "@" in trust_domain:
        raise InvalidSpiffeId(shown, "trust domain must not contain userinfo ('@')")
    if ":" in trust_domain:
        raise InvalidSpiffeId(shown, "trust domain must not contain a port (':')")
    if len(trust_domain.encode()) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeId(shown, f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    for char in trust_domain:
        if char not in _TRUST_DOMAIN_CHARS:
            raise InvalidSpiffeId(shown, f"trust domain contains {_describe(char)}; "
                                  "allowed: lowercase letters, digits, '.', '-', '_'")


def validate_segment(segment: str, *, text: str | None = None) -> None:
    """Raise `InvalidSpiffeId` unless `segment` is one valid path segment."""
    shown = segment if text is None else text
    if not segment:
        raise InvalidSpiffeId(shown, "path contains an empty segment ('//')")
    if segment in (".", ".."):
        raise InvalidSpiffeId(shown, f"path contains a dot segment ({segment!r})")
    for char in segment:
        if char not in _SEGMENT_CHARS:
            raise InvalidSpiffeId(shown, f"path segment contains {_describe(char)}; "
                                  "allowed: letters, digits, '.', '-', '_'")


def _validate_path(path: str, text: str) -> None:
    """Validate a path that is empty or starts with '/' (the caller split it off)."""
    if not path:
        return
    if path == "/" or path.endswith("/"):
        raise InvalidSpiffeId(text, "path must not end with '/'")
    for segment in path[1:].split("/"):
        validate_segment(segment, text=text)


def _describe(char: str) -> str:
    """Name a rejected character in a way that survives being printed in a log."""
    if char == "%":
        return "'%' (percent-encoding is not allowed)"
    if "A" <= char <= "Z":
        return f"an uppercase letter ({char!r})"
    return f"a forbidden character ({char!r})"


@dataclass(frozen=True, slots=True, eq=False)
class SpiffeId:
    """A canonical ``spiffe://<trust_domain><path>``; construction validates.

    `path` is ``""`` (the trust domain's own ID) or ``/seg[/seg...]``.
    """

    trust_domain: str
    path: str

    def __post_init__(self) -> None:
        text = f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"
        validate_trust_domain(self.trust_domain, text=text)
        if self.path and not self.path.startswith("/"):
            raise InvalidSpiffeId(text, "path must start with '/'")
        _validate_path(self.path, text)
        if len(text.encode()) > MAX_ID_BYTES:
            raise InvalidSpiffeId(text, f"longer than {MAX_ID_BYTES} bytes")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse `text`, accepting only the canonical spelling (see module docstring)."""
        if not isinstance(text, str):
            raise InvalidSpiffeId(repr(text), "not a string")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise InvalidSpiffeId(text, f"longer than {MAX_ID_BYTES} bytes")
        if not text.startswith(SCHEME_PREFIX):
            raise InvalidSpiffeId(text, _scheme_reason(text))
        rest = text[len(SCHEME_PREFIX):]
        for char, what in (("?", "a query"), ("#", "a fragment"), ("%", "percent-encoding")):
            if char in rest:
                raise InvalidSpiffeId(text, f"must not contain {what} ({char!r})")
        trust_domain, slash, path = rest.partition("/")
        validate_trust_domain(trust_domain, text=text)
        return cls(trust_domain, slash + path)

    @classmethod
    def for_workload(cls, trust_domain: str, namespace: str, service_account: str) -> SpiffeId:
        """The mesh's workload identity: ``spiffe://<td>/ns/<ns>/sa/<sa>``.

        Each part must be one segment: a namespace of ``a/sa/b`` must not be able to
        compose someone else's identity.
        """
        text = f"{SCHEME_PREFIX}{trust_domain}/ns/{namespace}/sa/{service_account}"
        validate_segment(namespace, text=text)
        validate_segment(service_account, text=text)
        return cls(trust_domain, f"/ns/{namespace}/sa/{service_account}")

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments (empty for a trust-domain ID)."""
        return tuple(self.path[1:].split("/")) if self.path else ()

    @property
    def namespace(self) -> str | None:
        """The namespace if this is exactly ``/ns/<ns>/sa/<sa>``, else None."""
        return self._workload_part(1)

    @property
    def service_account(self) -> str | None:
        """The service account if this is exactly ``/ns/<ns>/sa/<sa>``, else None."""
        return self._workload_part(3)

    def _workload_part(self, index: int) -> str | None:
        segs = self.segments
        if len(segs) == 4 and segs[0] == "ns" and segs[2] == "sa":
            return segs[index]
        return None

    def matches(self, pattern: str) -> bool:
        """Istio-style principal match, for *policy evaluation only*.

        ``*`` matches any ID; ``prefix*`` and ``*suffix`` match by prefix/suffix; anything
        else must be equal. A pattern starting with ``spiffe://`` is compared with the whole
        URI, otherwise with the URI minus its scheme (Istio writes principals as
        ``cluster.local/ns/x/sa/y``). Any other ``*`` raises `InvalidPrincipalPattern`.
        """
        if pattern == "*":
            return True
        leading, trailing = pattern.startswith("*"), pattern.endswith("*")
        body = pattern[1:] if leading else pattern[:-1] if trailing else pattern
        if "*" in body:
            raise InvalidPrincipalPattern(
                f"principal pattern {pattern!r}: only one leading or trailing '*' is allowed")
        subject = str(self) if body.startswith(SCHEME_PREFIX) else self.uri_body
        if leading:
            return subject.endswith(body)
        if trailing:
            return subject.startswith(body)
        return subject == body

    @property
    def uri_body(self) -> str:
        """The ID without its scheme: ``<trust_domain><path>`` (Istio's principal form)."""
        return f"{self.trust_domain}{self.path}"

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"

    def __repr__(self) -> str:
        return f"SpiffeId({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpiffeId):
            return NotImplemented
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def _scheme_reason(text: str) -> str:
    """Explain a bad scheme; an uppercase SPIFFE gets its own message (it is a common typo)."""
    if text[: len(SCHEME_PREFIX)].lower() == SCHEME_PREFIX:
        return "scheme must be lowercase 'spiffe://'"
    if "://" not in text:
        return "missing 'spiffe://' scheme"
    return "scheme must be 'spiffe://'"
