"""The strict HTTP/1.1 grammar (RFC 9112/9110) for one complete line or one complete head.

These functions are the *authority* on what is accepted: the readers' fast path (llhttp) may
only return what these would return, and falls back to them whenever in doubt. Errors are
raised with the request-side status; the response reader re-labels them 502.
"""

from __future__ import annotations

import re

from hybridmesh.proxy.protocols.errors import ErrorCode, RemoteProtocolError

__all__ = [
    "BAD_VALUE_CHAR",
    "HOST_VALUE",
    "REQUEST_LINE",
    "STATUS_LINE",
    "TOKEN",
    "absolute_authority",
    "check_target",
    "connection_tokens",
    "parse_chunk_line",
    "parse_header_line",
    "parse_request_line",
    "parse_status_line",
]

_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
TOKEN = re.compile(_TCHAR + rb"+")
REQUEST_LINE = re.compile(rb"(" + _TCHAR + rb"+) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])")
STATUS_LINE = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ([\t \x21-\x7e\x80-\xff]*))?")
BAD_VALUE_CHAR = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:;" + _TCHAR + rb"+(?:=(?:" + _TCHAR + rb"+|" + _QUOTED + rb"))?)*"
)
_VERSIONS = (b"1.1", b"1.0")
_HOST = rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)"
_HOST_NONEMPTY = rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)"
HOST_VALUE = re.compile(_HOST + rb"(?::[0-9]*)?")
_AUTHORITY_FORM = re.compile(_HOST_NONEMPTY + rb":[0-9]{1,5}")
_ABSOLUTE_FORM = re.compile(
    rb"(?i:https?)://(" + _HOST_NONEMPTY + rb"(?::[0-9]*)?)(?:[/?][^#]*)?"
)


def _fail(code: ErrorCode, detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(code, detail)


def parse_request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """``method SP target SP HTTP/x.y`` → (method, target, version); one SP each, no extras."""
    match = REQUEST_LINE.fullmatch(line)
    if match is None:
        raise _fail(ErrorCode.BAD_REQUEST_LINE, f"malformed request line {line[:64]!r}")
    method, target, version = match.groups()
    if version not in _VERSIONS:
        raise _fail(ErrorCode.UNSUPPORTED_VERSION, f"HTTP/{version.decode()} is not HTTP/1.x")
    check_target(method, target)
    return method, target, version


def check_target(method: bytes, target: bytes) -> None:
    """Request-target form must fit the method (RFC 9112 §3.2); fragments are never sent."""
    if method == b"CONNECT":
        ok = _AUTHORITY_FORM.fullmatch(target) is not None
    elif target == b"*":
        ok = method == b"OPTIONS"
    elif target[:1] == b"/":
        ok = b"#" not in target
    else:
        ok = _ABSOLUTE_FORM.fullmatch(target) is not None
    if not ok:
        raise _fail(ErrorCode.BAD_TARGET, f"target {target[:64]!r} not allowed for {method!r}")


def absolute_authority(target: bytes) -> bytes | None:
    """The authority of an absolute-form target (lowercased), else None."""
    if target[:1] == b"/" or target == b"*":
        return None
    match = _ABSOLUTE_FORM.fullmatch(target)
    return None if match is None else match.group(1).lower()


def parse_status_line(line: bytes) -> tuple[bytes, int, bytes]:
    """``HTTP/x.y SP 3DIGIT [SP reason]`` → (version, status, reason)."""
    match = STATUS_LINE.fullmatch(line)
    if match is None:
        raise _fail(ErrorCode.BAD_STATUS_LINE, f"malformed status line {line[:64]!r}")
    version, status, reason = match.groups()
    if version not in _VERSIONS:
        raise _fail(ErrorCode.UNSUPPORTED_VERSION, f"HTTP/{version.decode()} is not HTTP/1.x")
    if status[:1] == b"0":
        raise _fail(ErrorCode.BAD_STATUS_LINE, f"status {status.decode()} out of range")
    return version, int(status), reason or b""


def parse_header_line(line: bytes) -> tuple[bytes, bytes]:
    """``name ":" OWS value OWS`` (line without CRLF) → (lowercase name, trimmed value)."""
    if line[:1] in (b" ", b"\t"):
        raise _fail(ErrorCode.OBS_FOLD, "obsolete line folding (continuation line)")
    colon = line.find(b":")
    if colon < 0:
        raise _fail(ErrorCode.BAD_HEADER_LINE, f"header line without a colon {line[:64]!r}")
    name = line[:colon]
    if name[-1:] in (b" ", b"\t"):
        raise _fail(ErrorCode.WHITESPACE_BEFORE_COLON, f"whitespace before colon in {name!r}")
    if TOKEN.fullmatch(name) is None:
        raise _fail(ErrorCode.BAD_HEADER_NAME, f"invalid header name {name[:64]!r}")
    value = line[colon + 1 :].strip(b" \t")
    if BAD_VALUE_CHAR.search(value) is not None:
        raise _fail(ErrorCode.BAD_HEADER_VALUE, f"control character in {name.decode()} value")
    return name.lower(), value


def parse_chunk_line(line: bytes) -> int:
    """``hex-size *(";" ext-name ["=" token|quoted])`` with no whitespace → size."""
    match = _CHUNK_LINE.fullmatch(line)
    if match is None:
        raise _fail(ErrorCode.BAD_CHUNK_SIZE, f"invalid chunk-size line {line[:64]!r}")
    return int(match.group(1), 16)


def connection_tokens(headers: tuple[tuple[bytes, bytes], ...]) -> set[bytes]:
    """Lowercased options of every Connection header (empty list elements ignored)."""
    options: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            options.update(t.strip(b" \t").lower() for t in value.split(b","))
    options.discard(b"")
    return options
