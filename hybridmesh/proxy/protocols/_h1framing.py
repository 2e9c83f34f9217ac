"""Message framing and connection semantics of a complete head (RFC 9112 §6, §9).

This is where request smuggling is refused: a head whose body length could be read two ways
(Content-Length with Transfer-Encoding, two Content-Lengths, a coding other than a single
final ``chunked``) never produces an event. Errors carry the request-side status.
"""

from __future__ import annotations

import re

from hybridmesh.proxy.protocols._h1events import Framing, Headers
from hybridmesh.proxy.protocols._h1grammar import HOST_VALUE, absolute_authority
from hybridmesh.proxy.protocols.errors import ErrorCode, RemoteProtocolError

__all__ = ["FORBIDDEN_TRAILERS", "check_trailers", "options", "request_head", "response_head"]

_CONTENT_LENGTH = re.compile(rb"[0-9]{1,18}")  # < 2**63: fits every peer's integer
_FRAMING_NAMES = frozenset((b"content-length", b"transfer-encoding", b"host", b"connection"))
FORBIDDEN_TRAILERS = frozenset(
    (
        b"content-length", b"transfer-encoding", b"host", b"connection", b"keep-alive",
        b"te", b"trailer", b"upgrade", b"proxy-connection", b"content-type", b"authorization",
    )
)


class _Fields:
    """The framing-relevant fields of one head, collected in a single pass."""

    __slots__ = ("chunked", "connection", "hosts", "length")

    def __init__(self, headers: Headers) -> None:
        self.length: int | None = None
        self.chunked = False
        self.hosts: list[bytes] = []
        self.connection: set[bytes] = set()
        for name, value in headers:
            if name not in _FRAMING_NAMES:
                continue
            if name == b"host":
                self.hosts.append(value)
            elif name == b"connection":
                self.connection |= options(value)
            elif name == b"content-length":
                self._content_length(value)
            else:
                self._transfer_encoding(value)

    def _content_length(self, value: bytes) -> None:
        if self.length is not None:
            raise RemoteProtocolError(
                ErrorCode.DUPLICATE_CONTENT_LENGTH, "more than one Content-Length"
            )
        if _CONTENT_LENGTH.fullmatch(value) is None:
            raise RemoteProtocolError(
                ErrorCode.BAD_CONTENT_LENGTH, f"Content-Length {value[:32]!r}: not 1-18 digits"
            )
        self.length = int(value)

    def _transfer_encoding(self, value: bytes) -> None:
        if self.chunked or value.lower() != b"chunked":
            raise RemoteProtocolError(
                ErrorCode.BAD_TRANSFER_ENCODING,
                f"Transfer-Encoding must be exactly one 'chunked', got {value[:32]!r}",
            )
        self.chunked = True

    def check_framing(self, version: bytes) -> None:
        if self.chunked and self.length is not None:
            raise RemoteProtocolError(
                ErrorCode.CONTENT_LENGTH_AND_TRANSFER_ENCODING,
                "both Content-Length and Transfer-Encoding",
            )
        if self.chunked and version == b"1.0":
            raise RemoteProtocolError(
                ErrorCode.BAD_TRANSFER_ENCODING, "Transfer-Encoding in an HTTP/1.0 message"
            )

    def keep_alive(self, version: bytes) -> bool:
        if b"close" in self.connection:
            return False
        return version == b"1.1" or b"keep-alive" in self.connection


def options(value: bytes) -> set[bytes]:
    """The lowercase tokens of a comma list such as Connection (``a, B;q=1`` → a, b)."""
    value = value.lower()
    if b"," not in value and b";" not in value:
        return {value} if value else set()  # the usual single token, already trimmed
    found = {t.partition(b";")[0].strip(b" \t") for t in value.split(b",")}
    found.discard(b"")
    return found


def _check_host(fields: _Fields, version: bytes, method: bytes, target: bytes) -> None:
    """One syntactically valid Host (required in 1.1), agreeing with an absolute-form target.

    A mismatch would let routing (by Host) and the origin (by target) pick different hosts.
    """
    if len(fields.hosts) > 1:
        raise RemoteProtocolError(ErrorCode.BAD_HOST, "more than one Host header")
    if not fields.hosts:
        if version == b"1.1":
            raise RemoteProtocolError(ErrorCode.MISSING_HOST, "HTTP/1.1 request without Host")
        return
    host = fields.hosts[0]
    if HOST_VALUE.fullmatch(host) is None:
        raise RemoteProtocolError(ErrorCode.BAD_HOST, f"invalid Host {host[:64]!r}")
    if target[:1] == b"/" or method == b"CONNECT":
        return
    authority = absolute_authority(target)
    if authority is not None and authority != host.lower():
        raise RemoteProtocolError(ErrorCode.BAD_HOST, "Host differs from the target's authority")


def request_head(
    method: bytes, target: bytes, version: bytes, headers: Headers
) -> tuple[int | None, bool]:
    """(content_length, keep_alive) of a request; content_length None means chunked."""
    fields = _Fields(headers)
    fields.check_framing(version)
    if method == b"CONNECT" and (fields.chunked or fields.length):
        raise RemoteProtocolError(ErrorCode.UNEXPECTED_BODY, "CONNECT request with a body")
    _check_host(fields, version, method, target)
    length = None if fields.chunked else (fields.length or 0)
    return length, fields.keep_alive(version)


def response_head(
    method: bytes, status: int, version: bytes, headers: Headers
) -> tuple[int | None, bool, Framing]:
    """(declared content_length, keep_alive, body framing) of a response to ``method``."""
    fields = _Fields(headers)
    fields.check_framing(version)
    keep_alive = fields.keep_alive(version)
    if status < 200 or status in (204, 304) or method == b"HEAD":
        return fields.length, keep_alive, Framing.NONE
    if method == b"CONNECT" and status < 300:
        return None, keep_alive, Framing.NONE
    if fields.chunked:
        return None, keep_alive, Framing.CHUNKED
    if fields.length is not None:
        return fields.length, keep_alive, Framing.LENGTH
    return None, False, Framing.CLOSE


def check_trailers(trailers: Headers) -> None:
    """Refuse trailer fields that would change framing, routing or authentication."""
    for name, _ in trailers:
        if name in FORBIDDEN_TRAILERS:
            raise RemoteProtocolError(ErrorCode.BAD_TRAILER, f"{name.decode()} in trailers")
