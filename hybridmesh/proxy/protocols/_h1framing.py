"""Message framing and connection semantics of a complete head (RFC 9112 §6, §9).

This is where request smuggling is refused: a head whose body length could be read two ways
(Content-Length with Transfer-Encoding, two Content-Lengths, a coding other than a single
final ``chunked``) never produces an event. Errors carry the request-side status.
"""

from __future__ import annotations

from hybridmesh.proxy.protocols._h1events import Framing, Headers
from hybridmesh.proxy.protocols._h1grammar import HOST_VALUE, absolute_authority
from hybridmesh.proxy.protocols.errors import ErrorCode, RemoteProtocolError

__all__ = ["FORBIDDEN_TRAILERS", "check_trailers", "options", "request_head", "response_head"]

_FRAMING_NAMES = frozenset((b"content-length", b"transfer-encoding", b"host", b"connection"))
_NO_OPTIONS: frozenset[bytes] = frozenset()
_HOSTS: set[bytes] = set()  # Host values already proven valid (HOST_VALUE), bounded
_MAX_HOSTS = 1024
FORBIDDEN_TRAILERS = frozenset(
    (
        b"content-length", b"transfer-encoding", b"host", b"connection", b"keep-alive",
        b"te", b"trailer", b"upgrade", b"proxy-connection", b"content-type", b"authorization",
    )
)


def _scan(headers: Headers, version: bytes) -> tuple[int | None, bool, list[bytes], bool]:
    """One pass over a head: (Content-Length, chunked?, Host values, keep-alive?).

    Written as one flat loop because it runs for every message (see ``_bench_http1``).
    """
    length: int | None = None
    chunked = False
    hosts: list[bytes] = []
    connection: frozenset[bytes] | set[bytes] = _NO_OPTIONS
    for name, value in headers:
        if name not in _FRAMING_NAMES:
            continue
        if name == b"host":
            hosts.append(value)
        elif name == b"connection":
            connection = connection | options(value)
        elif name == b"content-length":
            length = _content_length(value, length)
        else:
            chunked = _transfer_encoding(value, chunked)
    if chunked and length is not None:
        raise RemoteProtocolError(
            ErrorCode.CONTENT_LENGTH_AND_TRANSFER_ENCODING,
            "both Content-Length and Transfer-Encoding",
        )
    if chunked and version == b"1.0":
        raise RemoteProtocolError(
            ErrorCode.BAD_TRANSFER_ENCODING, "Transfer-Encoding in an HTTP/1.0 message"
        )
    if b"close" in connection:
        return length, chunked, hosts, False
    return length, chunked, hosts, version == b"1.1" or b"keep-alive" in connection


def _content_length(value: bytes, seen: int | None) -> int:
    if seen is not None:
        raise RemoteProtocolError(ErrorCode.DUPLICATE_CONTENT_LENGTH, "two Content-Length fields")
    if not (0 < len(value) <= 18 and value.isdigit()):  # bytes.isdigit: ASCII 0-9 only;
        # 18 digits < 2**63: fits every peer's integer
        raise RemoteProtocolError(
            ErrorCode.BAD_CONTENT_LENGTH, f"Content-Length {value[:32]!r}: not 1-18 digits"
        )
    return int(value)


def _transfer_encoding(value: bytes, seen: bool) -> bool:
    if seen or value.lower() != b"chunked":
        raise RemoteProtocolError(
            ErrorCode.BAD_TRANSFER_ENCODING,
            f"Transfer-Encoding must be exactly one 'chunked', got {value[:32]!r}",
        )
    return True


def options(value: bytes) -> set[bytes]:
    """The lowercase tokens of a comma list such as Connection (``a, B;q=1`` → a, b)."""
    value = value.lower()
    if value.find(b",") < 0 and value.find(b";") < 0:  # find(): see _h1fast.llhttp_fields
        return {value} if value else set()  # the usual single token, already trimmed
    found = {t.partition(b";")[0].strip(b" \t") for t in value.split(b",")}
    found.discard(b"")
    return found


def _check_host(hosts: list[bytes], version: bytes, method: bytes, target: bytes) -> None:
    """One syntactically valid Host (required in 1.1), agreeing with an absolute-form target.

    A mismatch would let routing (by Host) and the origin (by target) pick different hosts.
    """
    if len(hosts) != 1:
        if hosts:
            raise RemoteProtocolError(ErrorCode.BAD_HOST, "more than one Host header")
        if version == b"1.1":
            raise RemoteProtocolError(ErrorCode.MISSING_HOST, "HTTP/1.1 request without Host")
        return
    host = hosts[0]
    if host not in _HOSTS:  # a connection's requests name the same few hosts: check each once
        if HOST_VALUE.fullmatch(host) is None:
            raise RemoteProtocolError(ErrorCode.BAD_HOST, f"invalid Host {host[:64]!r}")
        if len(_HOSTS) >= _MAX_HOSTS:
            _HOSTS.clear()  # bounded: clients naming ever new hosts only cost the check
        _HOSTS.add(host)
    if target[:1] == b"/" or method == b"CONNECT":
        return
    authority = absolute_authority(target)
    if authority is not None and authority != host.lower():
        raise RemoteProtocolError(ErrorCode.BAD_HOST, "Host differs from the target's authority")


def request_head(
    method: bytes, target: bytes, version: bytes, headers: Headers
) -> tuple[int | None, bool]:
    """(content_length, keep_alive) of a request; content_length None means chunked."""
    length, chunked, hosts, keep_alive = _scan(headers, version)
    if method == b"CONNECT" and (chunked or length):
        raise RemoteProtocolError(ErrorCode.UNEXPECTED_BODY, "CONNECT request with a body")
    _check_host(hosts, version, method, target)
    return (None if chunked else (length or 0)), keep_alive


def response_head(
    method: bytes, status: int, version: bytes, headers: Headers
) -> tuple[int | None, bool, Framing]:
    """(declared content_length, keep_alive, body framing) of a response to ``method``."""
    length, chunked, _, keep_alive = _scan(headers, version)
    if status < 200 or status in (204, 304) or method == b"HEAD":
        return length, keep_alive, Framing.NONE
    if method == b"CONNECT" and status < 300:
        return None, keep_alive, Framing.NONE
    if chunked:
        return None, keep_alive, Framing.CHUNKED
    if length is not None:
        return length, keep_alive, Framing.LENGTH
    return None, False, Framing.CLOSE


def check_trailers(trailers: Headers) -> None:
    """Refuse trailer fields that would change framing, routing or authentication."""
    for name, _ in trailers:
        if name in FORBIDDEN_TRAILERS:
            raise RemoteProtocolError(ErrorCode.BAD_TRAILER, f"{name.decode()} in trailers")
