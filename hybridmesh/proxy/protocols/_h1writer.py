"""Canonical HTTP/1.1 serialization: the proxy never forwards the bytes it received.

Every head is rebuilt from an event: hop-by-hop fields are dropped (RFC 9110 §7.6.1 plus
``Proxy-Connection``, ``HTTP2-Settings`` and everything ``Connection`` names), ``TE`` survives
only as ``te: trailers``, and the framing (``content-length`` when the length is known, else
``transfer-encoding: chunked``, or close-delimited towards HTTP/1.0) is ours. Upgrades are
never forwarded: ``Upgrade: h2c`` cannot reach a backend through us.

Header names are written lowercase, as the readers store them; events built by the proxy
must use lowercase names too (checked), so hop-by-hop matching cannot be bypassed by case.
Everything written is validated (no CR/LF/NUL can be injected, e.g. from HTTP/2 headers or a
path rewrite); a violation is a :class:`LocalProtocolError`, our bug rather than the peer's.
Header tuples straight from a reader (:class:`ParsedHeaders`) are valid by construction and
skip the field check, which is most of the cost of writing a head.
"""

from __future__ import annotations

import re

from hybridmesh.proxy.protocols._h1events import (
    Framing,
    Headers,
    InformationalResponse,
    ParsedHeaders,
    Request,
    Response,
)
from hybridmesh.proxy.protocols._h1framing import options
from hybridmesh.proxy.protocols._h1grammar import BAD_VALUE_CHAR, TOKEN
from hybridmesh.proxy.protocols.errors import LocalProtocolError

__all__ = [
    "HOP_BY_HOP",
    "frame_data",
    "frame_end",
    "request_framing",
    "response_framing",
    "serialize_informational",
    "serialize_request",
    "serialize_response",
]

HOP_BY_HOP = frozenset(
    (
        b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding",
        b"upgrade", b"http2-settings", b"content-length",
    )
)
_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))
_LOWER_NAMES = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9a-z]+:)*")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_PLAIN_OPTIONS = frozenset((b"keep-alive", b"close", b"host"))
# module constants: an Enum member lookup costs ~5x a global read, and these run per message
_NONE, _LENGTH, _CHUNKED, _CLOSE = Framing.NONE, Framing.LENGTH, Framing.CHUNKED, Framing.CLOSE
# memos of what was checked once: valid methods, formatted status lines (bounded)
_MEMO_SIZE = 256
_METHODS: set[bytes] = set()
_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def request_framing(req: Request) -> Framing:
    """How :func:`serialize_request` frames the body of ``req``."""
    length = req.content_length
    if length is None:
        return _CHUNKED
    if length or req.method in _BODY_METHODS:
        return _LENGTH
    return _NONE


def response_framing(resp: Response, request_method: bytes, http_version: bytes) -> Framing:
    """How :func:`serialize_response` frames the body, given the request and client version."""
    status = resp.status
    if request_method == b"HEAD" or status in (204, 304):
        return _NONE
    if request_method == b"CONNECT" and status < 300:
        return _NONE
    if resp.content_length is not None:
        return _LENGTH
    return _CHUNKED if http_version == b"1.1" else _CLOSE


def serialize_request(req: Request, *, keep_alive: bool = True,
                      framing: Framing | None = None) -> bytes:
    """Request head for an upstream, always HTTP/1.1 (so it needs a host field).
    ``framing``: :func:`request_framing` of ``req``, when the caller has it."""
    method, target = req.method, req.target
    if method not in _METHODS:  # a handful of methods: each is checked once
        if TOKEN.fullmatch(method) is None:
            raise LocalProtocolError(f"invalid method {method[:64]!r}")
        if len(_METHODS) < _MEMO_SIZE:
            _METHODS.add(method)
    if _TARGET.fullmatch(target) is None:
        raise LocalProtocolError(f"invalid target {target[:64]!r}")
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    _fields(parts, req.headers, request=True)
    if framing is None:
        framing = request_framing(req)
    if framing is _LENGTH:
        parts.append(b"content-length: %d\r\n" % (req.content_length or 0))
    elif framing is _CHUNKED:
        parts.append(b"transfer-encoding: chunked\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    out = b"".join(parts)
    if out.find(b"\r\nhost: ") < 0:  # find(), not `in`: see _h1fast.llhttp_fields
        raise LocalProtocolError("an HTTP/1.1 request needs a host field; add one")
    return out


def serialize_response(
    resp: Response,
    *,
    request_method: bytes = b"GET",
    http_version: bytes = b"1.1",
    keep_alive: bool = True,
    framing: Framing | None = None,
) -> bytes:
    """Response head for a client that sent ``request_method`` over HTTP/``http_version``.

    A body of unknown length goes chunked to HTTP/1.1 clients and close-delimited to
    HTTP/1.0 ones (then the connection must close: we write ``connection: close``).
    ``framing``: :func:`response_framing` of the same arguments, when the caller has it.
    """
    if framing is None:
        framing = response_framing(resp, request_method, http_version)
    parts = [_status_line(resp.status, resp.reason)]
    _fields(parts, resp.headers)
    declared = resp.content_length
    if framing is _LENGTH or (request_method == b"HEAD" and declared is not None):
        parts.append(b"content-length: %d\r\n" % (declared or 0))
    elif framing is _CHUNKED:
        parts.append(b"transfer-encoding: chunked\r\n")
    if not keep_alive or framing is _CLOSE:
        parts.append(b"connection: close\r\n")
    elif http_version == b"1.0":
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def serialize_informational(resp: InformationalResponse) -> bytes:
    """A 1xx interim head (send only to HTTP/1.1 clients; 101 is never forwarded)."""
    if not 100 <= resp.status < 200 or resp.status == 101:
        raise LocalProtocolError(f"status {resp.status} is not a forwardable 1xx")
    parts = [_status_line(resp.status, resp.reason)]
    _fields(parts, resp.headers)
    parts.append(b"\r\n")
    return b"".join(parts)


def frame_data(framing: Framing, data: bytes) -> bytes:
    """Body bytes as they go on the wire under ``framing``."""
    if framing is _CHUNKED:
        return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
    if framing is _NONE and data:
        raise LocalProtocolError("body data for a message without a body")
    return data


def frame_end(framing: Framing, trailers: Headers = ()) -> bytes:
    """The end of a body: the last chunk and trailers when chunked, else nothing.

    Trailers cannot travel without chunking; they are dropped then.
    """
    if framing is not _CHUNKED:
        return b""
    parts = [b"0\r\n"]
    _fields(parts, trailers)
    parts.append(b"\r\n")
    return b"".join(parts)


def _status_line(status: int, reason: bytes) -> bytes:
    """``HTTP/1.1 <status> <reason>`` CRLF, checked; a few (status, reason) pairs make up
    nearly all responses, so each is checked and formatted once (a bounded memo)."""
    line = _STATUS_LINES.get((status, reason))
    if line is not None:
        return line
    if not 100 <= status <= 999 or BAD_VALUE_CHAR.search(reason) is not None:
        raise LocalProtocolError(f"invalid status {status} or reason {reason[:64]!r}")
    line = b"HTTP/1.1 %d %b\r\n" % (status, reason)
    if len(_STATUS_LINES) < _MEMO_SIZE:  # bounded: a peer cannot grow it with odd reasons
        _STATUS_LINES[status, reason] = line
    return line


def _fields(parts: list[bytes], headers: Headers, *, request: bool = False) -> None:
    """Append the end-to-end fields of ``headers`` to ``parts``.

    One pass for the usual head without ``Connection``; a head with one starts over in
    :func:`_fields_named`, which first collects the fields it names.
    """
    if type(headers) is not ParsedHeaders:
        _check_fields(headers)
    start = len(parts)
    trailers_ok = False
    for name, value in headers:
        if name not in HOP_BY_HOP:
            parts += (name, b": ", value, b"\r\n")
        elif name == b"connection":
            del parts[start:]
            _fields_named(parts, headers, request=request)
            return
        elif request and name == b"te" and b"trailers" in options(value):
            trailers_ok = True
    if trailers_ok:
        parts.append(b"te: trailers\r\n")


def _fields_named(parts: list[bytes], headers: Headers, *, request: bool) -> None:
    """:func:`_fields` for a head with ``Connection``: the fields it names are dropped too."""
    named = [value for name, value in headers if name == b"connection"]
    drop = HOP_BY_HOP | _connection_named(named)
    trailers_ok = False
    for name, value in headers:
        if name not in drop:
            parts += (name, b": ", value, b"\r\n")
        elif request and name == b"te" and b"trailers" in options(value):
            trailers_ok = True
    if trailers_ok:
        parts.append(b"te: trailers\r\n")


def _check_fields(headers: Headers) -> None:
    """Fields not straight from a reader: names must be lowercase tokens (so hop-by-hop
    matching cannot be dodged by case) and values free of CR, LF, NUL and other controls."""
    names = b":".join(name for name, _ in headers) + b":" if headers else b""
    if _LOWER_NAMES.fullmatch(names) is None:
        raise LocalProtocolError("header names must be non-empty lowercase tokens")
    if BAD_VALUE_CHAR.search(b"".join(value for _, value in headers)) is not None:
        raise LocalProtocolError("control character (CR, LF, NUL...) in a header value")


def _connection_named(values: list[bytes]) -> frozenset[bytes]:
    """Fields named by Connection (hop-by-hop by declaration); ``host`` is never dropped."""
    named: set[bytes] = set()
    for value in values:
        named |= options(value)
    return frozenset(named - _PLAIN_OPTIONS)
