"""Three-valued matching of one request attribute against one policy value.

A condition is YES when the request provably satisfies it, NO when it provably does not, and
MAYBE when the request cannot prove either way: a TCP connection has no path, a plaintext peer
has no identity, and a backend may read ``/ADMIN/`` as ``/admin``. Conditions combine with
Kleene logic (AND = min, OR = max, NOT swaps YES and NO), and the engine resolves MAYBE against
the requester: an ALLOW rule needs YES, a DENY rule fires on YES or MAYBE. Every ambiguity
therefore fails closed, with one mechanism instead of a special case per field.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal

from hybridmesh.identity.spiffe import SCHEME_PREFIX, SpiffeId
from hybridmesh.policy.normalize import BadHost, NormalizedPath, decode_path, normalize_host

__all__ = [
    "Facts",
    "HostPattern",
    "MethodPattern",
    "PathPattern",
    "Pattern",
    "Tri",
    "all_of",
    "any_of",
    "namespace_match",
    "port_match",
    "principal_match",
    "service_account_match",
]

_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_RAW: Final = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_HEX: Final = frozenset("0123456789abcdefABCDEF")


class Tri(IntEnum):
    NO = 0
    MAYBE = 1
    YES = 2

    def negate(self) -> Tri:
        return Tri(2 - self)


def any_of(values: Iterable[Tri]) -> Tri:
    """Kleene OR; stops at the first YES."""
    best = Tri.NO
    for value in values:
        if value is Tri.YES:
            return value
        best = max(best, value)
    return best


def all_of(values: Iterable[Tri]) -> Tri:
    """Kleene AND; stops at the first NO."""
    worst = Tri.YES
    for value in values:
        if value is Tri.NO:
            return value
        worst = min(worst, value)
    return worst


@dataclass(frozen=True, slots=True)
class Facts:
    """What the engine knows about one request, computed once per decision."""

    peer: SpiffeId | None
    proven: bool  # the peer's ID is in the mesh's trust domain: its namespace/SA are real
    namespace: str | None
    service_account: str | None  # "ns/sa"
    port: str
    http: bool
    method: str | None
    path: NormalizedPath | None
    host: str | None


Kind = Literal["any", "exact", "prefix", "suffix"]


@dataclass(frozen=True, slots=True)
class Pattern:
    """Istio string match: ``*``, ``prefix*``, ``*suffix`` or exact (validated upstream)."""

    kind: Kind
    literal: str

    @classmethod
    def parse(cls, text: str) -> Pattern:
        if text == "*":
            return cls("any", "")
        if text.startswith("*"):
            return cls("suffix", text[1:])
        if text.endswith("*"):
            return cls("prefix", text[:-1])
        return cls("exact", text)

    def with_literal(self, literal: str) -> Pattern:
        return Pattern(self.kind, literal)

    def test(self, value: str) -> bool:
        if self.kind == "exact":
            return value == self.literal
        if self.kind == "prefix":
            return value.startswith(self.literal)
        if self.kind == "suffix":
            return value.endswith(self.literal)
        return True


def principal_match(pattern: str, facts: Facts) -> Tri:
    """``*`` means "any authenticated peer"; a foreign trust domain never proves a wildcard."""
    peer = facts.peer
    if peer is None:
        return Tri.NO if pattern == "*" else Tri.MAYBE
    if not peer.matches(pattern):
        return Tri.NO
    if facts.proven or _pins_trust_domain(pattern, peer.trust_domain):
        return Tri.YES
    return Tri.MAYBE


def _pins_trust_domain(pattern: str, trust_domain: str) -> bool:
    """True if the pattern itself spells the peer's trust domain (so the match is meant)."""
    if pattern.startswith("*"):
        return False
    body = pattern.removeprefix(SCHEME_PREFIX)
    return not pattern.endswith("*") or body.startswith(f"{trust_domain}/")


def namespace_match(pattern: Pattern, facts: Facts) -> Tri:
    if not facts.proven:
        return Tri.MAYBE
    return Tri.YES if facts.namespace is not None and pattern.test(facts.namespace) else Tri.NO


def service_account_match(account: str, facts: Facts) -> Tri:
    if not facts.proven:
        return Tri.MAYBE
    return Tri.YES if facts.service_account == account else Tri.NO


def port_match(port: str, facts: Facts) -> Tri:
    return Tri.YES if facts.port == port else Tri.NO


@dataclass(frozen=True, slots=True)
class MethodPattern:
    """HTTP methods are case-sensitive, but some frameworks upper-case them or serve HEAD
    with the GET handler: those readings are MAYBE."""

    pattern: Pattern

    def __call__(self, facts: Facts) -> Tri:
        method = facts.method
        if not facts.http or method is None:
            return Tri.MAYBE
        if self.pattern.test(method):
            return Tri.YES
        upper = method.upper()
        if self.pattern.test(upper) or (upper == "HEAD" and self.pattern.test("GET")):
            return Tri.MAYBE
        return Tri.NO


@dataclass(frozen=True, slots=True)
class HostPattern:
    """Hosts compare case-insensitively, without port and trailing dot (both sides)."""

    pattern: Pattern

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        pattern = Pattern.parse(text.lower())
        literal = pattern.literal
        if pattern.kind == "exact":
            with contextlib.suppress(BadHost):  # an unusable host just never matches
                literal = normalize_host(literal)
        if pattern.kind in ("exact", "suffix"):
            literal = literal.removesuffix(".")
        return cls(pattern.with_literal(literal))

    def __call__(self, facts: Facts) -> Tri:
        if not facts.http or facts.host is None:
            return Tri.MAYBE
        return Tri.YES if self.pattern.test(facts.host) else Tri.NO


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A path pattern tested against every reading of the normalized path.

    Readings: as forwarded (with ``;params``), without parameters, fully percent-decoded. YES
    needs all three; one is MAYBE, as is a match after the equivalences some backends apply
    and we do not (ASCII case, a trailing ``/``, trailing dots and spaces in a segment).
    """

    encoded: Pattern
    decoded: Pattern

    @classmethod
    def parse(cls, text: str) -> PathPattern:
        """Canonicalize the literal like a request path; ValueError if it cannot be."""
        pattern = Pattern.parse(text)
        encoded = _canonical_escapes(pattern.literal)
        return cls(pattern.with_literal(encoded), pattern.with_literal(decode_path(encoded)))

    def __call__(self, facts: Facts) -> Tri:
        path = facts.path
        if not facts.http or path is None:
            return Tri.MAYBE
        if self.encoded.kind == "any":
            return Tri.YES
        hits = (
            self.encoded.test(path.path),
            self.encoded.test(path.match_path),
            self.decoded.test(path.decoded_path),
        )
        if all(hits):
            return Tri.YES
        if any(hits) or self._loosely(path.decoded_path):
            return Tri.MAYBE
        return Tri.NO

    def _loosely(self, path: str) -> bool:
        literal = self.decoded.literal
        if self.decoded.kind == "exact":
            return _trim(_loose(path)) == _trim(_loose(literal))
        if self.decoded.kind == "prefix":
            prefix = _loose(literal, partial_last=True)
            folded = _loose(path)
            return folded.startswith(prefix) or (folded + "/").startswith(prefix)
        suffix = _trim(_loose(literal))
        return bool(suffix) and _trim(_loose(path)).endswith(suffix)


def _loose(path: str, *, partial_last: bool = False) -> str:
    """Case-folded, each segment without trailing dots/spaces (Windows file-name rules)."""
    segments = path.lower().split("/")
    last = segments.pop()
    folded = [segment.rstrip(". ") for segment in segments]
    return "/".join([*folded, last if partial_last else last.rstrip(". ")])


def _trim(path: str) -> str:
    return path.rstrip("/")


def _canonical_escapes(literal: str) -> str:
    """Spell a pattern literal as :func:`normalize_path` spells paths (escapes, hex case)."""
    out: list[str] = []
    index = 0
    while index < len(literal):
        char = literal[index]
        if char == "%":
            digits = literal[index + 1 : index + 3]
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise ValueError(f"path pattern {literal!r}: invalid percent-encoding")
            decoded = chr(int(digits, 16))
            out.append(decoded if decoded in _UNRESERVED else f"%{digits.upper()}")
            index += 3
            continue
        if char in _PATH_RAW:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode())
        index += 1
    return "".join(out)
