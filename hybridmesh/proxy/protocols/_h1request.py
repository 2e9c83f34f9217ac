"""Server side: read the requests a client sends (pipelined ones queue in the buffer).

Errors carry the status to answer (400, 414, 431, 505). After a request that ends the
connection (``Connection: close``, HTTP/1.0 without keep-alive) nothing more is parsed; after
a CONNECT the reader pauses until the proxy calls ``switch_protocol()`` or ``resume()``.
"""

from __future__ import annotations

import httptools

from hybridmesh.proxy.protocols._h1events import (
    MAKE_REQUEST,
    NEED_DATA,
    Event,
    Framing,
    Headers,
    Limits,
    NeedData,
    Request,
)
from hybridmesh.proxy.protocols._h1fast import llhttp_fields
from hybridmesh.proxy.protocols._h1framing import request_head
from hybridmesh.proxy.protocols._h1grammar import REQUEST_LINE, check_target, parse_request_line
from hybridmesh.proxy.protocols._h1reader import Reader, Step
from hybridmesh.proxy.protocols.errors import RemoteProtocolError

__all__ = ["RequestReader"]

_VERSIONS = (b"1.1", b"1.0")
_CHUNKED, _LENGTH = Framing.CHUNKED, Framing.LENGTH  # Enum member lookups cost, globals less
_CLOSE, _TUNNEL, _KEEP_ALIVE = Step.CLOSE, Step.TUNNEL, Step.KEEP_ALIVE


class RequestReader(Reader):
    """Sans-IO reader of client requests: ``receive_data()`` then ``next_event()`` until
    ``NEED_DATA``. Events per request: Request, Data*, EndOfMessage."""

    def __init__(self, limits: Limits | None = None, *, fast_path: bool = True) -> None:
        super().__init__(limits, fast_path=fast_path)
        self._crlf_skipped = False

    def _on_idle(self) -> Event | NeedData | None:
        if self._section is None:
            rest = len(self._buf) - self._pos
            if rest == 0:
                return self._at_eof_between_messages() if self._eof else NEED_DATA
            if not self._crlf_skipped and self._buf[self._pos] == 13:
                # RFC 9112 §2.2: tolerate one empty line before a request line (some
                # clients send CRLF after a POST body).
                if rest < 2 and not self._eof:
                    return NEED_DATA
                if self._buf[self._pos : self._pos + 2] == b"\r\n":
                    self._pos += 2
                    self._crlf_skipped = True
                    return None
        return self._start_head()

    def _fast_head(self, start: int) -> Event | None:
        buf = self._buf
        if buf[start] == 13:
            return None  # an empty line first: _on_idle's tolerance, on the slow path
        memo = self._memo
        if memo is not None:
            if buf.startswith(memo[0], start):
                self._crlf_skipped = False
                return self._recall(memo, start)
            self._missed()
        limits = self.limits
        end = buf.find(b"\r\n\r\n", start, start + limits.max_head_size)  # a whole head?
        if end < 0:
            return None
        line_end = buf.find(b"\r\n", start)
        if line_end - start > limits.max_start_line:
            return None
        match = REQUEST_LINE.fullmatch(buf, start, line_end)
        if match is None:
            return None
        method, target, version = match.groups()
        if version not in _VERSIONS:
            return None
        head_end = end + 4
        head = buf[start:head_end]
        fields = llhttp_fields(httptools.HttpRequestParser, head, limits)
        if fields is None:
            return None
        try:
            if method == b"CONNECT" or target[:1] != b"/" or target.find(b"#") >= 0:
                check_target(method, target)  # (an origin-form target without '#' passes)
            event = self._request(method, target, version, fields, head)
        except RemoteProtocolError:
            return None  # the slow path re-parses and raises the precise error
        self._pos = head_end
        return event

    def _check_start_line(self, line: bytes) -> None:
        parse_request_line(line)

    def _finish_head(self, start_line: bytes, fields: Headers) -> Event | None:
        method, target, version = parse_request_line(start_line)
        return self._request(method, target, version, fields)

    def _request(self, method: bytes, target: bytes, version: bytes, fields: Headers,
                 head: bytes | None = None) -> Request:
        """The event of a parsed head (``head``: its bytes, from the fast path: memoized)."""
        length, keep_alive = request_head(method, target, version, fields)
        framing = _CHUNKED if length is None else _LENGTH
        after = _TUNNEL if method == b"CONNECT" else _KEEP_ALIVE
        event = MAKE_REQUEST(method, target, fields, version, keep_alive, length)
        self._enter_body(framing, length, after=after if keep_alive else _CLOSE,
                         memo=None if head is None else (head, event))
        self._crlf_skipped = False
        return event
