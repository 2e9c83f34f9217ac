"""Client side: read the responses an upstream sends to the requests we forwarded.

The framing of a response depends on the request (a HEAD answer has no body, a 2xx to
CONNECT opens a tunnel), so the proxy registers each forwarded request's method with
:meth:`ResponseReader.expect`, in order. Any error is answered ``502`` downstream.
"""

from __future__ import annotations

from collections import deque

import httptools

from hybridmesh.proxy.protocols._h1events import (
    MAKE_RESPONSE,
    NEED_DATA,
    Event,
    Headers,
    InformationalResponse,
    Limits,
    NeedData,
    Response,
)
from hybridmesh.proxy.protocols._h1fast import llhttp_fields
from hybridmesh.proxy.protocols._h1framing import response_head
from hybridmesh.proxy.protocols._h1grammar import STATUS_LINE, parse_status_line
from hybridmesh.proxy.protocols._h1reader import Reader, Step
from hybridmesh.proxy.protocols.errors import ErrorCode, RemoteProtocolError

__all__ = ["ResponseReader"]

_VERSIONS = (b"1.1", b"1.0")
_CLOSE, _TUNNEL, _KEEP_ALIVE = Step.CLOSE, Step.TUNNEL, Step.KEEP_ALIVE  # globals: cheaper


_STATUS_LINES: dict[bytes, tuple[bytes, int, bytes]] = {}
"""Status lines the fast path accepted, parsed (a few distinct ones make up nearly all
responses; bounded, so odd reasons cannot grow it)."""
_MAX_STATUS_LINES = 256


def _status_line(line: bytes) -> tuple[bytes, int, bytes] | None:
    """(version, status, reason) of a status line the fast path takes, memoized; None: the
    slow path decides (and names the error, if any)."""
    match = STATUS_LINE.fullmatch(line)
    if match is None:
        return None
    version, status, reason = match.groups()
    if version not in _VERSIONS or status[:1] == b"0":
        return None
    parsed = (version, int(status), reason or b"")
    if len(_STATUS_LINES) < _MAX_STATUS_LINES:
        _STATUS_LINES[line] = parsed
    return parsed


class ResponseReader(Reader):
    """Sans-IO reader of upstream responses. Events per request: InformationalResponse*,
    Response, Data*, EndOfMessage."""

    _error_status: int | None = 502

    def __init__(self, limits: Limits | None = None, *, fast_path: bool = True) -> None:
        super().__init__(limits, fast_path=fast_path)
        self._methods: deque[bytes] = deque()
        self._memo_method = b""

    def expect(self, method: bytes) -> None:
        """Register a request just sent on this connection (responses come in order)."""
        self._methods.append(method)

    def _on_idle(self) -> Event | NeedData | None:
        if self._section is None:
            if len(self._buf) == self._pos:
                return self._at_eof_between_messages() if self._eof else NEED_DATA
            if not self._methods:
                raise RemoteProtocolError(
                    ErrorCode.UNSOLICITED_RESPONSE, "bytes received with no request outstanding"
                )
        return self._start_head()

    def _fast_head(self, start: int) -> Event | None:
        if not self._methods:
            return None  # unsolicited: _on_idle names the error
        buf = self._buf
        memo = self._memo
        if memo is not None:
            if buf.startswith(memo[0], start) and self._methods[0] == self._memo_method:
                self._methods.popleft()
                return self._recall(memo, start)
            self._missed()
        limits = self.limits
        end = buf.find(b"\r\n\r\n", start, start + limits.max_head_size)  # a whole head?
        if end < 0:
            return None
        line_end = buf.find(b"\r\n", start)
        if line_end - start > limits.max_start_line:
            return None
        line = buf[start:line_end]
        parsed = _STATUS_LINES.get(line)
        if parsed is None:
            parsed = _status_line(line)
            if parsed is None:
                return None
        version, status, reason = parsed
        head_end = end + 4
        head = buf[start:head_end]
        fields = llhttp_fields(httptools.HttpResponseParser, head, limits)
        if fields is None:
            return None
        try:
            event = self._response(version, status, reason, fields, head)
        except RemoteProtocolError:
            return None  # the slow path re-parses and raises the precise error
        self._pos = head_end
        return event

    def _check_start_line(self, line: bytes) -> None:
        parse_status_line(line)

    def _finish_head(self, start_line: bytes, fields: Headers) -> Event | None:
        version, status, reason = parse_status_line(start_line)
        return self._response(version, status, reason, fields)

    def _response(
        self, version: bytes, status: int, reason: bytes, fields: Headers,
        head: bytes | None = None,
    ) -> Response | InformationalResponse:
        """The event of a parsed head (``head``: its bytes, from the fast path: memoized
        with the request method, on which the framing depends)."""
        if status < 200:
            if status == 101:
                raise RemoteProtocolError(
                    ErrorCode.UNEXPECTED_INTERIM, "101 Switching Protocols (we never upgrade)"
                )
            self._advance(Step.INTERIM)
            return InformationalResponse(status, reason, fields, version)
        method = self._methods[0]
        length, keep_alive, framing = response_head(method, status, version, fields)
        if method == b"CONNECT" and status < 300:
            after = _TUNNEL
        else:
            after = _KEEP_ALIVE if keep_alive else _CLOSE
        self._methods.popleft()
        event = MAKE_RESPONSE(status, reason, fields, version, keep_alive, length)
        if head is not None and after is _KEEP_ALIVE:  # what _enter_body memoizes
            self._memo_method = method
        self._enter_body(framing, length, after=after,
                         memo=None if head is None else (head, event))
        return event
