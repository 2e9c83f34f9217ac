"""The incremental HTTP/1.1 message reader shared by the request and response sides.

A reader owns a byte buffer and a state; ``next_event()`` runs the handler of the current
state, which either returns an event (possibly advancing the state through the
:data:`TRANSITIONS` table) or ``NEED_DATA``. Errors are decided by the position of the first
offending byte, so feeding a stream whole or one byte at a time yields the same events and
the same error (the Hypothesis tests check it).

Heads take one of two paths. The *slow path* splits lines itself and applies
:mod:`._h1grammar` line by line: it is the authority and gives each error its exact code.
The *fast path* (subclasses) runs when a whole head is already buffered: llhttp tokenizes it
in C and the result is used only if it provably matches what the slow path would return;
anything unusual (including any llhttp error) re-runs the head through the slow path.
"""

from __future__ import annotations

import enum

from hybridmesh.proxy.protocols._h1events import (
    END_OF_MESSAGE,
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Framing,
    Headers,
    Limits,
    NeedData,
    ParsedHeaders,
)
from hybridmesh.proxy.protocols._h1framing import check_trailers
from hybridmesh.proxy.protocols._h1grammar import parse_chunk_line, parse_header_line
from hybridmesh.proxy.protocols.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = ["TRANSITIONS", "ReaderState", "Step"]

_CR = 13


class ReaderState(enum.Enum):
    """Where a reader is in the connection's message sequence."""

    # Identity hash in C: states and steps key hot-path dicts, and Enum.__hash__ is Python.
    __hash__ = object.__hash__

    IDLE = "idle"  # waiting for (the rest of) a head
    BODY = "body"  # Content-Length body
    CHUNK_SIZE = "chunk-size"
    CHUNK_DATA = "chunk-data"
    CHUNK_END = "chunk-end"  # the CRLF after chunk data
    TRAILERS = "trailers"
    UNTIL_CLOSE = "until-close"  # response body delimited by the server closing
    END = "end"  # body complete, EndOfMessage not yet returned
    MUST_CLOSE = "must-close"  # no further message: later input is discarded
    PAUSED = "paused"  # after CONNECT: the caller must switch_protocol() or resume()
    SWITCHED = "switched"  # the connection is a tunnel now; the reader is done
    CLOSED = "closed"  # the peer closed
    ERROR = "error"


class Step(enum.Enum):
    """What just happened, as the input of the transition table."""

    __hash__ = object.__hash__  # see ReaderState

    HEAD_NO_BODY = "head-no-body"
    HEAD_LENGTH = "head-length"
    HEAD_CHUNKED = "head-chunked"
    HEAD_UNTIL_CLOSE = "head-until-close"
    INTERIM = "interim"
    BODY_DONE = "body-done"
    CHUNK = "chunk"
    LAST_CHUNK = "last-chunk"
    CHUNK_CRLF = "chunk-crlf"
    TRAILERS_DONE = "trailers-done"
    KEEP_ALIVE = "keep-alive"
    CLOSE = "close"
    TUNNEL = "tunnel"
    RESUME = "resume"
    SWITCH = "switch"
    EOF = "eof"


_S = ReaderState
TRANSITIONS: dict[tuple[ReaderState, Step], ReaderState] = {
    (_S.IDLE, Step.HEAD_NO_BODY): _S.END,
    (_S.IDLE, Step.HEAD_LENGTH): _S.BODY,
    (_S.IDLE, Step.HEAD_CHUNKED): _S.CHUNK_SIZE,
    (_S.IDLE, Step.HEAD_UNTIL_CLOSE): _S.UNTIL_CLOSE,
    (_S.IDLE, Step.INTERIM): _S.IDLE,
    (_S.IDLE, Step.EOF): _S.CLOSED,
    (_S.BODY, Step.BODY_DONE): _S.END,
    (_S.CHUNK_SIZE, Step.CHUNK): _S.CHUNK_DATA,
    (_S.CHUNK_SIZE, Step.LAST_CHUNK): _S.TRAILERS,
    (_S.CHUNK_DATA, Step.BODY_DONE): _S.CHUNK_END,
    (_S.CHUNK_END, Step.CHUNK_CRLF): _S.CHUNK_SIZE,
    (_S.TRAILERS, Step.TRAILERS_DONE): _S.END,
    (_S.UNTIL_CLOSE, Step.EOF): _S.END,
    (_S.END, Step.KEEP_ALIVE): _S.IDLE,
    (_S.END, Step.CLOSE): _S.MUST_CLOSE,
    (_S.END, Step.TUNNEL): _S.PAUSED,
    (_S.MUST_CLOSE, Step.EOF): _S.CLOSED,
    (_S.PAUSED, Step.RESUME): _S.IDLE,
    (_S.PAUSED, Step.SWITCH): _S.SWITCHED,
}
_IDLE, _BODY, _END = _S.IDLE, _S.BODY, _S.END  # an Enum member lookup is ~5x a global read
_LENGTH, _NONE = Framing.LENGTH, Framing.NONE
_KEEP_ALIVE = Step.KEEP_ALIVE
_MEMO_MISSES = 8
Memo = tuple[bytes, Event, Framing, "int | None", Step]
"""(head bytes, event, framing, length, step after the message): a head to recall."""
_AFTER_END = {step: nxt for (state, step), nxt in TRANSITIONS.items() if state is _END}
"""The state after a message's end, by what the head said comes after (the fast path's
shortcut through the table for END's transitions)."""
_HEAD_STEP = {
    Framing.NONE: Step.HEAD_NO_BODY,
    Framing.LENGTH: Step.HEAD_LENGTH,
    Framing.CHUNKED: Step.HEAD_CHUNKED,
    Framing.CLOSE: Step.HEAD_UNTIL_CLOSE,
}


class _Section:
    """Slow-path progress through a head or trailer section: where it starts, what's parsed."""

    __slots__ = ("fields", "scan", "start", "start_line")

    def __init__(self, start: int, *, with_start_line: bool) -> None:
        self.start = start
        self.scan = start
        self.start_line: bytes | None = None if with_start_line else b""
        self.fields: list[tuple[bytes, bytes]] = []


class Reader:
    """Base reader: buffer, state machine, body framing. Subclasses parse heads."""

    _error_status: int | None = None  # overrides every error's status (502 upstream)

    def __init__(self, limits: Limits | None = None, *, fast_path: bool = True) -> None:
        self.limits = limits or Limits()
        self._fast = fast_path
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._state = ReaderState.IDLE
        self._error: RemoteProtocolError | None = None
        self._section: _Section | None = None
        self._remaining = 0
        self._eom: EndOfMessage = END_OF_MESSAGE
        self._after_eom = Step.KEEP_ALIVE
        self._memo: Memo | None = None  # the last keep-alive head parsed fast: _recall
        self._memo_misses = 0  # heads in a row that were not the memo's (see _missed)
        self._handlers = {
            _S.IDLE: self._on_idle,
            _S.BODY: self._on_body,
            _S.CHUNK_SIZE: self._on_chunk_size,
            _S.CHUNK_DATA: self._on_body,
            _S.CHUNK_END: self._on_chunk_end,
            _S.TRAILERS: self._on_trailers,
            _S.UNTIL_CLOSE: self._on_until_close,
            _S.END: self._on_end,
            _S.MUST_CLOSE: self._on_must_close,
            _S.PAUSED: self._on_paused,
            _S.CLOSED: self._on_closed,
        }

    @property
    def state(self) -> ReaderState:
        """The current state (ERROR after a RemoteProtocolError)."""
        return self._state

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed (end of stream)."""
        if self._error is not None:
            raise self._error
        if self._eof or self._state is ReaderState.SWITCHED:
            raise LocalProtocolError(f"receive_data() after EOF or switch ({self._state.name})")
        if not data:
            self._eof = True
        elif self._pos >= len(self._buf) and self._section is None:
            self._buf, self._pos = data if type(data) is bytes else bytes(data), 0
        else:
            self._buf = self._buf[self._pos :] + data
            if self._section is not None:  # its offsets are relative to the buffer start
                self._section.start -= self._pos
                self._section.scan -= self._pos
            self._pos = 0

    def receive_message(self, data: bytes) -> tuple[Event, bytes, EndOfMessage | None] | None:
        """``receive_data(data)``, then, when a message starts at ``data`` on an idle reader
        and its head is whole, that head at once: ``(head, body, end)``. When ``data`` is
        exactly the message (the head and its whole Content-Length body, or a head without
        one), ``body`` (possibly ``b""``) and ``end`` are what the following ``next_event()``
        calls would have returned, and the reader is past them; otherwise ``end`` is None and
        the rest comes from ``next_event()``. None: nothing was taken yet (``next_event()``).

        The events, states and errors are those of ``receive_data`` + ``next_event`` (the
        same code makes them); this only saves the calls for the common case of a small
        message arriving in one read.
        """
        if not (self._state is _IDLE and self._section is None and self._fast
                and self._pos >= len(self._buf) and not self._eof and data):
            self.receive_data(data)
            return None
        buf = self._buf = data if type(data) is bytes else bytes(data)
        self._pos = 0
        head = self._fast_head(0)
        if head is None:
            return None
        state, pos = self._state, self._pos
        if state is _END and pos == len(buf):
            body = b""
        elif state is _BODY and self._remaining == len(buf) - pos:
            self._pos = len(buf)
            self._remaining = 0
            body = buf[pos:]  # BODY_DONE: BODY -> END
        else:
            return head, b"", None
        eom, self._eom = self._eom, END_OF_MESSAGE  # _on_end
        self._state = _AFTER_END[self._after_eom]
        return head, body, eom

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA; raises RemoteProtocolError (forever) on bad input."""
        if self._error is not None:
            raise self._error
        try:
            while True:
                handler = self._handlers.get(self._state)
                if handler is None:
                    raise LocalProtocolError(f"next_event() in state {self._state.name}")
                event = handler()
                if event is not None:
                    return event
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def switch_protocol(self) -> bytes:
        """After a CONNECT exchange: the connection becomes a tunnel; returns unparsed bytes."""
        self._advance(Step.SWITCH)
        rest = self._buf[self._pos :]
        self._buf, self._pos = b"", 0
        return rest

    def resume(self) -> None:
        """After a refused CONNECT: keep parsing HTTP/1 on this connection."""
        self._advance(Step.RESUME)

    def _fail(self, exc: RemoteProtocolError) -> None:
        if self._error_status is not None:
            exc.status = self._error_status
        self._error = exc
        self._state = ReaderState.ERROR

    def _advance(self, step: Step) -> None:
        nxt = TRANSITIONS.get((self._state, step))
        if nxt is None:
            raise LocalProtocolError(f"no transition from {self._state.name} on {step.name}")
        self._state = nxt

    # -- heads ---------------------------------------------------------------------------

    def _on_idle(self) -> Event | NeedData | None:
        raise NotImplementedError

    def _start_head(self) -> Event | NeedData | None:
        """Message start: run the fast path if a head is whole, else the slow path."""
        if self._section is None:
            if self._fast:
                event = self._fast_head(self._pos)
                if event is not None:
                    return event
            self._section = _Section(self._pos, with_start_line=True)
        return self._slow_section(self._section, self.limits.max_start_line)

    def _fast_head(self, start: int) -> Event | None:
        """Subclass hook: the head at ``start`` parsed by llhttp, or None to go slow (also
        whenever the slow path would raise, or do anything but parse a head there)."""
        return None

    def _slow_section(self, sec: _Section, first_line_limit: int) -> Event | NeedData | None:
        """Feed complete lines of a head or trailer section through the grammar."""
        while True:
            line = self._take_line(sec, first_line_limit if sec.start_line is None else None)
            if line is None:
                return NEED_DATA
            if sec.start_line is None:
                self._check_start_line(line)
                sec.start_line = line
            elif line:
                sec.fields.append(parse_header_line(line))
                if len(sec.fields) > self.limits.max_headers:
                    raise RemoteProtocolError(
                        ErrorCode.TOO_MANY_HEADERS, f"more than {self.limits.max_headers} fields"
                    )
            else:
                self._section = None
                self._pos = sec.scan
                return self._finish_section(sec.start_line, ParsedHeaders(sec.fields))

    def _take_line(self, sec: _Section, first_line_limit: int | None) -> bytes | None:
        """The next complete line (without CRLF), None if not yet complete; checks limits."""
        # Each limit is judged on the bytes seen so far with the same arithmetic whether the
        # LF has arrived or not, so a byte-by-byte feed trips it exactly where a whole feed does.
        buf = self._buf
        lf = buf.find(b"\n", sec.scan)
        line_end = len(buf) if lf < 0 else lf  # the line's content (with its CR) so far
        if first_line_limit is not None and line_end - sec.scan > first_line_limit + 1:
            raise RemoteProtocolError(
                ErrorCode.REQUEST_LINE_TOO_LONG, f"start line longer than {first_line_limit}"
            )
        if line_end + (lf >= 0) - sec.start > self.limits.max_head_size:
            raise RemoteProtocolError(
                ErrorCode.HEADER_SECTION_TOO_LARGE, f"section over {self.limits.max_head_size} B"
            )
        if lf < 0:
            if self._eof:
                raise RemoteProtocolError(ErrorCode.INCOMPLETE_MESSAGE, "closed inside a head")
            return None
        if lf == sec.scan or buf[lf - 1] != _CR:
            raise RemoteProtocolError(ErrorCode.BAD_LINE_ENDING, "bare LF (CRLF required)")
        line = buf[sec.scan : lf - 1]
        if line.find(b"\r") >= 0:  # find(), not `in`: see _h1fast.llhttp_fields
            raise RemoteProtocolError(ErrorCode.BAD_LINE_ENDING, "bare CR inside a line")
        sec.scan = lf + 1
        return line

    def _check_start_line(self, line: bytes) -> None:
        """Subclass hook: validate the start line as soon as it is complete."""

    def _finish_section(self, start_line: bytes, fields: Headers) -> Event | None:
        """A head (start_line set) or trailer section (start_line b"") is complete."""
        if start_line:
            return self._finish_head(start_line, fields)
        check_trailers(fields)
        self._eom = EndOfMessage(fields) if fields else END_OF_MESSAGE
        self._advance(Step.TRAILERS_DONE)
        return None

    def _finish_head(self, start_line: bytes, fields: Headers) -> Event | None:
        raise NotImplementedError

    def _recall(self, memo: Memo, start: int) -> Event:
        """The head at ``start``, whose bytes the caller found to be ``memo``'s: the same
        event, and the body set up as that head said.

        The fast path memoizes the last head it parsed on a keep-alive connection (see
        :meth:`_enter_body`), for a next head that is byte for byte the same: HTTP/1's
        answer to HPACK's dynamic table. Parsing is a function of the bytes, the limits and
        (responses) the request method, so identical bytes give the identical, immutable
        event; any other head is parsed, at the cost of one failed ``startswith``."""
        head, event, framing, length, after = memo
        self._memo_misses = 0
        self._enter_body(framing, length, after=after)
        self._pos = start + len(head)
        return event

    def _missed(self) -> None:
        """A head that was not the memo's. A connection whose heads keep differing (traced
        traffic: a unique id in every request) stops memoizing, so the memo costs it
        nothing after the first few heads."""
        self._memo_misses += 1
        if self._memo_misses >= _MEMO_MISSES:
            self._memo = None
            self._memo_misses = -1  # off for good: _enter_body memoizes no more

    def _enter_body(self, framing: Framing, length: int | None, *, after: Step,
                    memo: tuple[bytes, Event] | None = None) -> None:
        """Set up body reading for the head just returned; ``memo``: its (head bytes,
        event) from the fast path, remembered for a keep-alive connection."""
        if memo is not None and after is _KEEP_ALIVE and self._memo_misses >= 0:
            self._memo = (*memo, framing, length, after)
        self._remaining = length or 0
        self._eom = END_OF_MESSAGE
        self._after_eom = after
        if not length and framing is _LENGTH:
            framing = _NONE
        self._advance(_HEAD_STEP[framing])

    # -- bodies --------------------------------------------------------------------------

    def _on_body(self) -> Event | NeedData | None:
        available = len(self._buf) - self._pos
        if not available:
            if self._eof:
                raise RemoteProtocolError(ErrorCode.INCOMPLETE_MESSAGE, "closed inside a body")
            return NEED_DATA
        n = min(available, self._remaining)
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        self._remaining -= n
        if not self._remaining:
            self._advance(Step.BODY_DONE)
        return Data(data) if data else None

    def _on_chunk_size(self) -> Event | NeedData | None:
        buf, pos, limit = self._buf, self._pos, self.limits.max_chunk_line
        lf = buf.find(b"\n", pos, pos + limit)
        if lf < 0:
            if len(buf) - pos >= limit:
                raise RemoteProtocolError(ErrorCode.CHUNK_LINE_TOO_LONG, f"over {limit} B")
            if self._eof:
                raise RemoteProtocolError(ErrorCode.INCOMPLETE_MESSAGE, "closed inside a chunk")
            return NEED_DATA
        if lf == pos or buf[lf - 1] != _CR:
            raise RemoteProtocolError(ErrorCode.BAD_LINE_ENDING, "chunk-size line without CRLF")
        size = parse_chunk_line(buf[pos : lf - 1])
        self._pos = lf + 1
        if size:
            self._remaining = size
            self._advance(Step.CHUNK)
        else:
            self._section = _Section(self._pos, with_start_line=False)
            self._advance(Step.LAST_CHUNK)
        return None

    def _on_chunk_end(self) -> NeedData | None:
        got = self._buf[self._pos : self._pos + 2]
        if got != b"\r\n"[: len(got)]:
            raise RemoteProtocolError(ErrorCode.BAD_CHUNK_FRAMING, "no CRLF after chunk data")
        if len(got) < 2:
            if self._eof:
                raise RemoteProtocolError(ErrorCode.INCOMPLETE_MESSAGE, "closed inside a chunk")
            return NEED_DATA
        self._pos += 2
        self._advance(Step.CHUNK_CRLF)
        return None

    def _on_trailers(self) -> Event | NeedData | None:
        if self._section is None:
            raise LocalProtocolError("trailers without a section")
        return self._slow_section(self._section, 0)

    def _on_until_close(self) -> Event | NeedData | None:
        data = self._buf[self._pos :]
        self._pos = len(self._buf)
        if data:
            return Data(data)
        if self._eof:
            self._advance(Step.EOF)
            return None
        return NEED_DATA

    # -- between messages ----------------------------------------------------------------

    def _on_end(self) -> EndOfMessage:
        eom, self._eom = self._eom, END_OF_MESSAGE
        self._advance(self._after_eom)
        return eom

    def _on_must_close(self) -> Event | NeedData:
        self._buf, self._pos = b"", 0  # nothing after a final message is ever parsed
        if self._eof:
            self._advance(Step.EOF)
            return ConnectionClosed()
        return NEED_DATA

    def _on_paused(self) -> NeedData:
        return NEED_DATA

    def _on_closed(self) -> Event:
        return ConnectionClosed()

    def _at_eof_between_messages(self) -> Event:
        """In IDLE with nothing buffered after end of stream: a clean close."""
        self._advance(Step.EOF)
        return ConnectionClosed()
