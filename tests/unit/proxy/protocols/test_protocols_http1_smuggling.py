"""Every smuggling/framing refusal: exact status and code, and the smuggled request never
appears — checked whole, byte by byte, and with and without the llhttp fast path."""

from __future__ import annotations

import pytest
from h1_playbook import outcome

from hybridmesh.proxy.protocols.http1 import (
    NEED_DATA,
    ErrorCode,
    Limits,
    RemoteProtocolError,
    Request,
    RequestReader,
)

E = ErrorCode
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


def post(headers: bytes, body: bytes = b"") -> bytes:
    """A POST whose framing headers are under test, followed by a would-be smuggled GET."""
    return b"POST /upload HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n" + body + SMUGGLED


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked\r\n", body)


CASES: dict[str, tuple[bytes, ErrorCode, int]] = {
    # Content-Length / Transfer-Encoding ambiguity
    "cl-then-te": (
        post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        E.CONTENT_LENGTH_AND_TRANSFER_ENCODING, 400,
    ),
    "te-then-cl": (
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", b"0\r\n\r\n"),
        E.CONTENT_LENGTH_AND_TRANSFER_ENCODING, 400,
    ),
    "cl-duplicate-equal": (
        post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"),
        E.DUPLICATE_CONTENT_LENGTH, 400,
    ),
    "cl-duplicate-differ": (
        post(b"Content-Length: 3\r\nContent-Length: 40\r\n", b"abc"),
        E.DUPLICATE_CONTENT_LENGTH, 400,
    ),
    "cl-list": (post(b"Content-Length: 3, 3\r\n", b"abc"), E.BAD_CONTENT_LENGTH, 400),
    "cl-plus": (post(b"Content-Length: +3\r\n", b"abc"), E.BAD_CONTENT_LENGTH, 400),
    "cl-minus": (post(b"Content-Length: -1\r\n", b"abc"), E.BAD_CONTENT_LENGTH, 400),
    "cl-hex": (post(b"Content-Length: 0x3\r\n", b"abc"), E.BAD_CONTENT_LENGTH, 400),
    "cl-letters": (post(b"Content-Length: 3a\r\n", b"abc"), E.BAD_CONTENT_LENGTH, 400),
    "cl-inner-space": (post(b"Content-Length: 1 2\r\n", b"abc"), E.BAD_CONTENT_LENGTH, 400),
    "cl-empty": (post(b"Content-Length:\r\n", b"abc"), E.BAD_CONTENT_LENGTH, 400),
    "cl-too-long": (post(b"Content-Length: " + b"0" * 18 + b"3\r\n", b"abc"),
                    E.BAD_CONTENT_LENGTH, 400),
    "te-gzip": (post(b"Transfer-Encoding: gzip\r\n", b"abc"), E.BAD_TRANSFER_ENCODING, 400),
    "te-gzip-chunked": (
        post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), E.BAD_TRANSFER_ENCODING, 400,
    ),
    "te-chunked-gzip": (
        post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), E.BAD_TRANSFER_ENCODING, 400,
    ),
    "te-chunked-twice": (
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        E.BAD_TRANSFER_ENCODING, 400,
    ),
    "te-xchunked": (post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
                    E.BAD_TRANSFER_ENCODING, 400),
    "te-chunked-param": (post(b"Transfer-Encoding: chunked;q=1\r\n", b"0\r\n\r\n"),
                         E.BAD_TRANSFER_ENCODING, 400),
    "te-http10": (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        E.BAD_TRANSFER_ENCODING, 400,
    ),
    "connect-with-body": (
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 5\r\n\r\nhello" + SMUGGLED,
        E.UNEXPECTED_BODY, 400,
    ),
    # line structure
    "obs-fold": (post(b"X-A: 1\r\n 2\r\n"), E.OBS_FOLD, 400),
    "obs-fold-te": (post(b"Transfer-Encoding:\r\n\tchunked\r\n", b"0\r\n\r\n"), E.OBS_FOLD, 400),
    "bare-lf-request-line": (b"GET / HTTP/1.1\nHost: a\r\n\r\n" + SMUGGLED, E.BAD_LINE_ENDING, 400),
    "bare-lf-header": (post(b"X-A: 1\nTransfer-Encoding: chunked\r\n"), E.BAD_LINE_ENDING, 400),
    "bare-lf-end-of-head": (b"GET / HTTP/1.1\r\nHost: a\r\n\n" + SMUGGLED, E.BAD_LINE_ENDING, 400),
    "lf-only-request": (b"GET / HTTP/1.1\nHost: a\n\n" + SMUGGLED, E.BAD_LINE_ENDING, 400),
    "bare-cr-header": (post(b"X-A: 1\rTransfer-Encoding: chunked\r\n"), E.BAD_LINE_ENDING, 400),
    # header fields
    "nul-in-value": (post(b"X-A: a\x00b\r\n"), E.BAD_HEADER_VALUE, 400),
    "ctl-in-value": (post(b"X-A: a\x01b\r\n"), E.BAD_HEADER_VALUE, 400),
    "del-in-value": (post(b"X-A: a\x7fb\r\n"), E.BAD_HEADER_VALUE, 400),
    "space-before-colon": (post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
                           E.WHITESPACE_BEFORE_COLON, 400),
    "tab-before-colon": (post(b"Content-Length\t: 3\r\n", b"abc"), E.WHITESPACE_BEFORE_COLON, 400),
    "bad-name-token": (post(b"X(A): 1\r\n"), E.BAD_HEADER_NAME, 400),
    "non-ascii-name": (post(b"X-\xc3\xa9: 1\r\n"), E.BAD_HEADER_NAME, 400),
    "empty-name": (post(b": 1\r\n"), E.BAD_HEADER_NAME, 400),
    "no-colon": (post(b"Transfer-Encoding chunked\r\n"), E.BAD_HEADER_LINE, 400),
    # chunked body
    "chunk-negative": (chunked(b"-1\r\nx\r\n0\r\n\r\n"), E.BAD_CHUNK_SIZE, 400),
    "chunk-plus": (chunked(b"+1\r\nx\r\n0\r\n\r\n"), E.BAD_CHUNK_SIZE, 400),
    "chunk-leading-space": (chunked(b" 1\r\nx\r\n0\r\n\r\n"), E.BAD_CHUNK_SIZE, 400),
    "chunk-trailing-space": (chunked(b"1 \r\nx\r\n0\r\n\r\n"), E.BAD_CHUNK_SIZE, 400),
    "chunk-0x": (chunked(b"0x1\r\nx\r\n0\r\n\r\n"), E.BAD_CHUNK_SIZE, 400),
    "chunk-not-hex": (chunked(b"g\r\nx\r\n0\r\n\r\n"), E.BAD_CHUNK_SIZE, 400),
    "chunk-empty-size": (chunked(b"\r\nx\r\n0\r\n\r\n"), E.BAD_CHUNK_SIZE, 400),
    "chunk-size-17-digits": (chunked(b"0" * 16 + b"1\r\nx\r\n0\r\n\r\n"), E.BAD_CHUNK_SIZE, 400),
    "chunk-ext-space": (chunked(b"1 ;a=b\r\nx\r\n0\r\n\r\n"), E.BAD_CHUNK_SIZE, 400),
    "chunk-ext-bare-quote": (chunked(b'1;a="b\r\nx\r\n0\r\n\r\n'), E.BAD_CHUNK_SIZE, 400),
    "chunk-ext-too-long": (chunked(b"1;a=" + b"b" * 1100 + b"\r\nx\r\n0\r\n\r\n"),
                           E.CHUNK_LINE_TOO_LONG, 400),
    "chunk-size-bare-lf": (chunked(b"1\nx\r\n0\r\n\r\n"), E.BAD_LINE_ENDING, 400),
    "chunk-data-overrun": (chunked(b"1\r\nxx\r\n0\r\n\r\n"), E.BAD_CHUNK_FRAMING, 400),
    "chunk-data-bare-lf": (chunked(b"1\r\nx\n0\r\n\r\n"), E.BAD_CHUNK_FRAMING, 400),
    "trailer-content-length": (chunked(b"0\r\nContent-Length: 5\r\n\r\n"), E.BAD_TRAILER, 400),
    "trailer-obs-fold": (chunked(b"0\r\nX-T: 1\r\n 2\r\n\r\n"), E.OBS_FOLD, 400),
    # request line and target
    "two-spaces": (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n" + SMUGGLED, E.BAD_REQUEST_LINE, 400),
    "trailing-space": (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n" + SMUGGLED, E.BAD_REQUEST_LINE, 400),
    "http09": (b"GET /\r\n\r\n" + SMUGGLED, E.BAD_REQUEST_LINE, 400),
    "lowercase-http": (b"GET / http/1.1\r\nHost: a\r\n\r\n", E.BAD_REQUEST_LINE, 400),
    "http2-version": (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", E.UNSUPPORTED_VERSION, 505),
    "http12-version": (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", E.UNSUPPORTED_VERSION, 505),
    "h2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", E.UNSUPPORTED_VERSION, 505),
    "control-in-target": (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", E.BAD_REQUEST_LINE, 400),
    "two-leading-crlf": (b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", E.BAD_REQUEST_LINE, 400),
    "connect-origin-form": (b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", E.BAD_TARGET, 400),
    "connect-no-port": (b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", E.BAD_TARGET, 400),
    "asterisk-not-options": (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", E.BAD_TARGET, 400),
    "relative-target": (b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", E.BAD_TARGET, 400),
    "fragment": (b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", E.BAD_TARGET, 400),
    "userinfo": (b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", E.BAD_TARGET, 400),
    "absolute-host-mismatch": (
        b"GET http://admin.internal/ HTTP/1.1\r\nHost: a\r\n\r\n", E.BAD_HOST, 400,
    ),
    # Host
    "missing-host": (b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n" + SMUGGLED, E.MISSING_HOST, 400),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", E.BAD_HOST, 400),
    "bad-host": (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", E.BAD_HOST, 400),
    # truncation
    "eof-in-head": (b"GET / HTTP/1.1\r\nHost: a\r\n", E.INCOMPLETE_MESSAGE, 400),
    "eof-in-body": (b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc",
                    E.INCOMPLETE_MESSAGE, 400),
}

MODES = [
    pytest.param("whole", True, id="whole-fast"),
    pytest.param("whole", False, id="whole-slow"),
    pytest.param("bytewise", True, id="bytewise"),
]


@pytest.mark.parametrize(("mode", "fast"), MODES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_with_exact_status(name: str, mode: str, fast: bool) -> None:
    data, code, status = CASES[name]
    events, error = outcome(data, mode, fast=fast)
    assert error == (code, status)
    targets = [e.target for e in events if isinstance(e, Request)]
    assert b"/smuggled" not in targets
    assert all(t == b"/upload" for t in targets)  # at most the carrier request itself


LIMITS = Limits(max_head_size=1024, max_headers=10, max_start_line=256)


@pytest.mark.parametrize(("mode", "fast"), MODES)
@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: a\r\n\r\n", E.REQUEST_LINE_TOO_LONG, 414),
        (b"GET /" + b"a" * 300, E.REQUEST_LINE_TOO_LONG, 414),  # no CRLF yet: still 414
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 1100 + b"\r\n\r\n",
         E.HEADER_SECTION_TOO_LARGE, 431),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 10 + b"\r\n", E.TOO_MANY_HEADERS, 431),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
         + b"T: 1\r\n" * 11 + b"\r\n", E.TOO_MANY_HEADERS, 431),
    ],
    ids=["line", "line-unterminated", "section", "count", "trailer-count"],
)
def test_limits(data: bytes, code: ErrorCode, status: int, mode: str, fast: bool) -> None:
    assert outcome(data + SMUGGLED, mode, fast=fast, limits=LIMITS)[1] == (code, status)


@pytest.mark.parametrize("fast", [True, False])
def test_limits_are_inclusive(fast: bool) -> None:
    """Exactly at each limit is accepted; one byte or field more is refused."""
    line = b"GET /" + b"a" * (256 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 256
    head = line + b"\r\nHost: a\r\n" + b"X: 1\r\n" * 8  # 10 fields with Y
    pad = 1024 - len(head) - len(b"Y: \r\n\r\n")
    full = head + b"Y: " + b"p" * pad + b"\r\n\r\n"
    assert len(full) == 1024
    assert outcome(full, fast=fast, limits=LIMITS)[1] is None
    longer = head + b"Y: " + b"p" * (pad + 1) + b"\r\n\r\n"
    assert outcome(longer, fast=fast, limits=LIMITS)[1] == (E.HEADER_SECTION_TOO_LARGE, 431)
    too_long_line = line.replace(b"/a", b"/aa", 1) + b"\r\nHost: a\r\n\r\n"
    assert outcome(too_long_line, fast=fast, limits=LIMITS)[1] == (E.REQUEST_LINE_TOO_LONG, 414)


def test_default_limits_are_16k_and_100() -> None:
    limits = Limits()
    assert (limits.max_head_size, limits.max_headers) == (16 * 1024, 100)
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 99 + b"\r\n"
    assert outcome(head)[1] is None
    assert outcome(head.replace(b"\r\n\r\n", b"\r\nX: 1\r\n\r\n"))[1] == (E.TOO_MANY_HEADERS, 431)


def test_reader_refuses_everything_after_an_error() -> None:
    reader = RequestReader()
    reader.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as first:
        reader.next_event()
    with pytest.raises(RemoteProtocolError) as again:
        reader.next_event()
    assert again.value is first.value
    with pytest.raises(RemoteProtocolError):
        reader.receive_data(SMUGGLED)


def test_good_request_before_a_bad_one_is_delivered_first() -> None:
    """Pipelined: the valid first request is returned; the error comes when reached."""
    reader = RequestReader()
    reader.receive_data(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /bad HTTP/1.1\r\n\r\n")
    first = reader.next_event()
    assert isinstance(first, Request) and first.target == b"/ok"
    reader.next_event()  # EndOfMessage
    with pytest.raises(RemoteProtocolError) as err:
        reader.next_event()
    assert err.value.code is E.MISSING_HOST
    assert reader.state.name == "ERROR"


def test_request_line_too_long_detected_without_waiting_for_crlf() -> None:
    reader = RequestReader(LIMITS)
    reader.receive_data(b"GET /" + b"a" * 252)
    assert reader.next_event() is NEED_DATA  # 257 bytes: could be 256 + CR
    reader.receive_data(b"a")
    with pytest.raises(RemoteProtocolError) as err:
        reader.next_event()
    assert err.value.status == 414
