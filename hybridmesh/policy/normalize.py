"""Request-target and Host normalization: one canonical path for matching AND forwarding.

An authorization bypass is a disagreement between what the policy engine matched and what the
backend served. The proxy therefore forwards exactly the path this module produces, and the
engine matches that same path, so the only ambiguity left is how a *backend* reads it (handled
by the engine, see ``hybridmesh.policy.engine``). Rules, in order:

1. The target must be origin-form (``/...``); asterisk-, absolute- and authority-form are
   refused (the proxy turns absolute-form into origin-form + Host before asking).
2. Raw control characters, space, DEL, non-ASCII and ``\\`` are refused anywhere in the path;
   controls, space and non-ASCII also in the query.
3. ``#fragment`` is dropped (a fragment never reaches a server); ``?query`` is split off, kept
   for forwarding and never matched.
4. Only RFC 3986 ``pchar`` and ``/`` may appear raw in the path; everything else is refused.
5. Percent-encoding: malformed ``%`` → refused; ``%00`` and encoded control characters →
   refused; ``%2F``/``%5C`` (either case) → refused, like Istio's
   ``pathWithEscapedSlashes: REJECT`` (decoding them would change the path's shape for some
   backends and not others; keeping them would let ``/admin%2Fx`` dodge a ``/admin/*`` rule);
   unreserved characters (``%41`` → ``A``, ``%2e`` → ``.``) are decoded exactly once; every
   other escape stays encoded with upper-case hex. ``%25`` followed by two hex digits
   (``%252F``) is refused: it is an escape of an escape, and a backend that decodes twice
   would see ``/`` where we matched ``%2F``. The decoded bytes must be valid UTF-8 (refuses
   overlong forms such as ``%C0%AE``, an old way to spell ``.``).
6. ``//`` is merged into ``/``; dot-segments are removed per RFC 3986 §5.2.4, never above
   the root.
7. Path parameters (``;x``) stay in the forwarded path. A segment whose name (before ``;`` or
   ``%3B``) is ``.`` or ``..``, e.g. ``..;/`` (Tomcat's classic traversal), and a segment made
   only of dots and spaces (``...``, ``.%20``: Windows reads them as dot-segments) are refused.

Case is preserved (paths are case-sensitive, RFC 3986 §6.2.2.1); only hex digits of escapes
are upper-cased. Hosts are compared case-insensitively without port and one trailing dot.

Every refusal raises :class:`BadPath` (or :class:`BadHost`), whose ``status`` is 400; nothing
else escapes these functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BadHost",
    "BadPath",
    "BadRequest",
    "NormalizedPath",
    "decode_path",
    "normalize_host",
    "normalize_path",
    "strip_params",
]

_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_RAW: Final = _UNRESERVED | frozenset("!$&'()*+,;=:@/%")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_IPV6: Final = frozenset("0123456789abcdef:.")
_HOST_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._~")
_FORBIDDEN_ESCAPES: Final = {0x2F: "an encoded '/' (%2F)", 0x5C: "an encoded '\\' (%5C)"}
_DOUBLE_ESCAPE: Final = re.compile(r"%25[0-9A-Fa-f]{2}")
_RAW_FORBIDDEN: Final = re.compile("[\x00-\x20\x7f-\U0010ffff]")
_CANONICAL: Final = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*/?")
"""Paths already in normal form: unreserved characters only, no empty or dot-led segment."""
_SHOWN: Final = 80


class BadRequest(ValueError):
    """The request cannot be authorized as sent; the proxy answers ``status`` (400)."""

    status: Final = 400

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "…"
        super().__init__(f"{shown!r}: {reason}")


class BadPath(BadRequest):
    """The request-target is malformed or ambiguous (see the module docstring)."""


class BadHost(BadRequest):
    """The Host (or :authority) is not a host name or address."""


@dataclass(frozen=True, slots=True)
class NormalizedPath:
    """A normalized request path and its views.

    ``path`` is forwarded (with ``;params``); ``match_path`` drops the parameters (so
    ``/admin;x`` is matched as ``/admin``); ``decoded_path`` is ``match_path`` read as a
    backend that percent-decodes everything would read it (parameters cut after decoding).
    """

    path: str
    query: str | None
    match_path: str
    decoded_path: str

    @property
    def target(self) -> str:
        """The request-target to forward: the path, and the query if there was one."""
        return self.path if self.query is None else f"{self.path}?{self.query}"


def normalize_path(target: str | bytes) -> NormalizedPath:
    """Normalize an origin-form request-target; raise :class:`BadPath` if it cannot be."""
    text = _as_text(target)
    _check_origin_form(text)
    without_fragment = text.partition("#")[0]
    raw_path, question, query = without_fragment.partition("?")
    if _CANONICAL.fullmatch(raw_path):  # the common case: nothing to decode, merge or remove
        return NormalizedPath(raw_path, query if question else None, raw_path, raw_path)
    segments = _decode_escapes(text, raw_path).split("/")
    merged = [segment for segment in segments[1:-1] if segment] + segments[-1:]
    path = "/" + "/".join(_remove_dot_segments(merged))
    _check_segments(text, path)
    return NormalizedPath(
        path=path,
        query=query if question else None,
        match_path=strip_params(path),
        decoded_path=strip_params(decode_path(path)),
    )


def strip_params(path: str) -> str:
    """Drop ``;params`` from every segment, then merge the empty segments that leaves."""
    names = [segment.partition(";")[0] for segment in path.split("/")]
    inner = [name for name in names[1:-1] if name]
    last = names[-1] if len(names) > 1 else ""
    return "/" + "/".join([*inner, last]) if inner or last else "/"


def decode_path(path: str) -> str:
    """Percent-decode a normalized path completely (as UTF-8); used for matching only."""
    raw = bytearray()
    index = 0
    while index < len(path):
        if path[index] == "%":
            raw.append(int(path[index + 1 : index + 3], 16))
            index += 3
        else:
            raw.extend(path[index].encode())
            index += 1
    return raw.decode("utf-8")


def normalize_host(host: str | bytes) -> str:
    """Lower-case ``host``, drop its port and one trailing dot; raise :class:`BadHost`."""
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    name = _split_port(text).lower()
    if name.startswith("["):
        if not set(name[1:-1]) <= _IPV6 or not name[1:-1]:
            raise BadHost(text, "an IPv6 literal holds only hex digits, ':' and '.'")
        return name
    name = name[:-1] if name.endswith(".") else name
    if not name or name.startswith(".") or name.endswith(".") or ".." in name:
        raise BadHost(text, "empty host name or empty label")
    if not set(name) <= _HOST_CHARS:
        raise BadHost(text, "a host may contain only letters, digits, '-', '.', '_' and '~'")
    return name


def _split_port(text: str) -> str:
    if text.startswith("["):
        address, bracket, rest = text.partition("]")
        if not bracket or (rest and not _is_port(rest)):
            raise BadHost(text, "an IPv6 literal is written [address] or [address]:port")
        return address + bracket
    name, colon, port = text.rpartition(":")
    if not colon:
        return text
    if not _is_port(colon + port):
        raise BadHost(text, "what follows ':' is not a port number")
    return name


def _is_port(text: str) -> bool:
    digits = text[1:]
    return text.startswith(":") and (not digits or (digits.isdigit() and len(digits) <= 5))


def _as_text(target: str | bytes) -> str:
    if isinstance(target, bytes):
        try:
            return target.decode("ascii")
        except UnicodeDecodeError:
            text = target.decode("latin-1")
            raise BadPath(text, "raw non-ASCII byte (percent-encode it)") from None
    return target


def _check_origin_form(text: str) -> None:
    bad = _RAW_FORBIDDEN.search(text)
    if bad:
        char = bad.group()
        if char.isascii():
            raise BadPath(text, f"raw control character or space {char!r} (percent-encode it)")
        raise BadPath(text, f"raw non-ASCII character {char!r} (percent-encode it)")
    if text.startswith("\\"):
        raise BadPath(text, "raw '\\' in the path (some servers read it as '/')")
    if text == "*":
        raise BadPath(text, "asterisk-form (OPTIONS *) has no path to authorize")
    if not text.startswith("/"):
        form = "absolute-form" if "://" in text else "not origin-form"
        raise BadPath(text, f"{form}: a request path must start with '/'")


def _decode_escapes(text: str, raw_path: str) -> str:
    """Validate raw characters and escapes; decode unreserved escapes, upper-case the rest."""
    out: list[str] = []
    index = 0
    while index < len(raw_path):
        char = raw_path[index]
        if char == "\\":
            raise BadPath(text, "raw '\\' in the path (some servers read it as '/')")
        if char not in _PATH_RAW:
            raise BadPath(text, f"{char!r} is not allowed raw in a path (percent-encode it)")
        if char == "%":
            out.append(_escape(text, raw_path[index + 1 : index + 3]))
            index += 3
        else:
            out.append(char)
            index += 1
    decoded = "".join(out)
    if _DOUBLE_ESCAPE.search(decoded):
        raise BadPath(text, "double percent-encoding (%25XX): backends disagree on decoding it")
    _check_utf8(text, decoded)
    return decoded


def _escape(text: str, digits: str) -> str:
    if len(digits) != 2 or not set(digits) <= _HEX:
        raise BadPath(text, "invalid percent-encoding ('%' must be followed by two hex digits)")
    value = int(digits, 16)
    if value == 0:
        raise BadPath(text, "encoded NUL (%00)")
    if value < 0x20 or value == 0x7F:
        raise BadPath(text, f"encoded control character (%{digits.upper()})")
    if value in _FORBIDDEN_ESCAPES:
        raise BadPath(text, f"{_FORBIDDEN_ESCAPES[value]}: escaped slashes are rejected")
    char = chr(value)
    return char if char in _UNRESERVED else f"%{digits.upper()}"


def _check_utf8(text: str, path: str) -> None:
    try:
        decode_path(path)
    except UnicodeDecodeError:
        raise BadPath(text, "percent-encoded bytes are not valid UTF-8") from None


def _remove_dot_segments(segments: list[str]) -> list[str]:
    """RFC 3986 §5.2.4 on a segment list; ``..`` at the root stays at the root."""
    out: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return out


def _check_segments(text: str, path: str) -> None:
    """Refuse segments that some backend would read as a dot-segment we did not remove."""
    for segment in path.split("/"):
        name = re.split(";|%3B", segment, maxsplit=1)[0]
        if name in (".", "..") and segment != name:
            raise BadPath(text, f"dot-segment with parameters ({segment!r}): ambiguous")
        spaced = name.replace("%20", " ")
        if spaced and not spaced.strip(". "):
            raise BadPath(text, f"segment {segment!r} is only dots and spaces: ambiguous")
