"""Sans-IO HTTP/2 for the proxy: h2 underneath, abuse guards in front, events like http1's.

Usage (either side; the client is :class:`H2Client`, the server :class:`H2Server`)::

    conn = H2Server()
    transport.write(conn.data_to_send())         # our preface/SETTINGS
    for event in conn.receive_data(chunk):       # RequestHeaders, Data, Trailers, ...
        ...
    conn.acknowledge_received(sid, n)            # after the n bytes were forwarded
    transport.write(conn.data_to_send())

Events carry a stream id and otherwise mirror :mod:`http1` (lowercase ``bytes`` names,
pseudo-headers split out), so the engine maps both protocols the same way.

The engine's duties: acknowledge every :class:`Data` (``flow_controlled_length``) once it
is forwarded or dropped; stop reading a stream's source while :meth:`send_data` reports
bytes queued, until :class:`WindowOpened`; stop reading the socket while the transport's
write buffer is high (that bounds what h2 answers on its own: PING/SETTINGS ACKs,
RST_STREAMs); after :class:`ConnectionAbuse` or :class:`ProtocolViolation` (or when
:attr:`closed`), write ``data_to_send()`` (it holds the GOAWAY) and close; to drain, call
:meth:`goaway` and close once :attr:`active_streams` is 0.

Why a wrapper and not bare h2:
- **Guards h2 lacks.** A 9-byte frame-header scan runs over the raw bytes *before* h2 sees
  them (:class:`_InboundGuard`), so an attack is cut at the offending frame: rapid reset
  (CVE-2023-44487), CONTINUATION floods (CVE-2024-27316 family: h2 would buffer 64 frames of
  up to 16 MiB each), oversized frames (h2 buffers a whole frame before checking its
  length), PING/SETTINGS floods. Each trips a typed event the engine counts.
- **Refusal, not death.** h2 answers a stream over SETTINGS_MAX_CONCURRENT_STREAMS with a
  connection-wide PROTOCOL_ERROR; RFC 9113 §5.1.2 allows a stream error, and REFUSED_STREAM
  tells the client a retry is safe. Same for streams arriving after our graceful GOAWAY.
- **Graceful GOAWAY.** h2 closes its state machine on any GOAWAY, sent or received, which
  fails in-flight streams that RFC 9113 §6.8 lets finish (gRPC servers send GOAWAY on
  max-connection-age). Both directions keep working for streams <= last_stream_id here.
- **Flow control as backpressure.** Sends beyond the peer's window are queued per stream
  (:meth:`send_data` returns how much is queued, :class:`WindowOpened` says it drained);
  received bytes reopen the peer's window only when :meth:`acknowledge_received` is called,
  i.e. after the proxy forwarded them, so a slow reader slows the writer end to end.
- **Cheaper sends.** h2's outbound header pipeline (about a dozen chained generators per
  field) is replaced by one validating pass (:func:`check_fields`); inbound validation stays
  h2's, as the peer is not trusted.
"""

from __future__ import annotations

import contextlib
import enum
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h2.config
import h2.events
import h2.exceptions
import h2.settings
import h2.utilities
import hpack.hpack
from h2.errors import ErrorCodes as H2ErrorCode
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import GoAwayFrame

from hybridmesh.proxy.protocols._h1events import Headers, Request, Response
from hybridmesh.proxy.protocols._h1framing import options
from hybridmesh.proxy.protocols._h2conn import Connection as _Connection
from hybridmesh.proxy.protocols._h2conn import GoAway as _GoAway
from hybridmesh.proxy.protocols._h2conn import Refused as _Refused
from hybridmesh.proxy.protocols._h2hpack import MemoDecoder, MemoEncoder
from hybridmesh.proxy.protocols.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = [
    "CONNECTION_SPECIFIC",
    "AbuseKind",
    "ConnectionAbuse",
    "ConnectionTerminated",
    "Data",
    "Event",
    "H2Client",
    "H2ErrorCode",
    "H2Limits",
    "H2Server",
    "Headers",
    "InformationalResponse",
    "LocalProtocolError",
    "ProtocolViolation",
    "RemoteProtocolError",
    "RequestHeaders",
    "ResponseHeaders",
    "StreamRefused",
    "StreamReset",
    "Trailers",
    "WindowOpened",
    "check_fields",
    "h1_request_head",
    "h1_request_to_h2",
    "h1_response_to_h2",
    "h2_request_to_h1",
    "h2_response_to_h1",
    "request_fields",
    "response_fields",
]

# ---------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class RequestHeaders:
    """A request head (server side). ``scheme``/``path`` are empty for CONNECT."""

    stream_id: int
    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: Headers
    end_stream: bool = False


@dataclass(frozen=True, slots=True)
class ResponseHeaders:
    """A final response head (client side)."""

    stream_id: int
    status: int
    headers: Headers
    end_stream: bool = False


@dataclass(frozen=True, slots=True)
class InformationalResponse:
    """A 1xx interim head (client side); the final one follows."""

    stream_id: int
    status: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class Data:
    """Body bytes. Hand ``flow_controlled_length`` (padding included) to
    :meth:`acknowledge_received` once the bytes are forwarded, or the peer stalls."""

    stream_id: int
    data: bytes
    flow_controlled_length: int
    end_stream: bool = False


@dataclass(frozen=True, slots=True)
class Trailers:
    """Trailing fields; they always end the peer's side of the stream."""

    stream_id: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is gone. ``remote``: the peer reset it (a GOAWAY that excludes one of our
    open client streams counts as a remote REFUSED_STREAM: safe to retry elsewhere)."""

    stream_id: int
    code: int
    remote: bool = True


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The peer sent GOAWAY. Streams above ``last_stream_id`` were not processed; those at
    or below may still finish when ``code`` is NO_ERROR (a graceful drain)."""

    code: int
    last_stream_id: int
    debug: bytes = b""


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """Everything queued on ``stream_id`` was handed to the connection: send more."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamRefused:
    """Guard: we answered RST_STREAM(REFUSED_STREAM) to a new stream (``reason`` is
    ``max-concurrent-streams`` or ``draining``); the client may retry it."""

    stream_id: int
    reason: str


class AbuseKind(enum.Enum):
    """Which guard tripped; the value is the stable name for metrics and logs."""

    RAPID_RESET = "rapid-reset"
    CONTINUATION_FLOOD = "continuation-flood"
    PING_FLOOD = "ping-flood"
    SETTINGS_FLOOD = "settings-flood"
    HEADER_LIST_TOO_LARGE = "header-list-too-large"


@dataclass(frozen=True, slots=True)
class ConnectionAbuse:
    """Guard: GOAWAY(ENHANCE_YOUR_CALM) is queued; write it and close the connection."""

    kind: AbuseKind
    detail: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The peer broke HTTP/2; GOAWAY(``code``) is queued; write it and close."""

    code: int
    detail: str


Event = (
    RequestHeaders | ResponseHeaders | InformationalResponse | Data | Trailers | StreamReset
    | ConnectionTerminated | WindowOpened | StreamRefused | ConnectionAbuse | ProtocolViolation
)


@dataclass(frozen=True, slots=True)
class H2Limits:
    """Settings we advertise and the guards' thresholds (Envoy/nginx-like defaults).

    Windows: ``stream_window`` is SETTINGS_INITIAL_WINDOW_SIZE, ``connection_window`` the
    connection-level window; together they bound what a peer can make us buffer before the
    proxy acknowledges. A reset is counted when the client resets a stream we had not
    finished; ``max_resets`` within ``reset_window_s`` trips, and so does a lifetime ratio of
    resets above ``reset_ratio`` of opened streams once ``reset_ratio_after`` were opened.
    """

    max_concurrent_streams: int = 100
    stream_window: int = 256 * 1024
    connection_window: int = 1024 * 1024
    max_frame_size: int = 16 * 1024
    max_header_list_size: int = 64 * 1024
    max_header_block: int = 64 * 1024
    max_continuations: int = 32
    max_resets: int = 100
    reset_window_s: float = 10.0
    reset_ratio_after: int = 200
    reset_ratio: float = 0.5
    max_pings: int = 100
    max_settings: int = 100
    control_window_s: float = 10.0

    def __post_init__(self) -> None:
        if not 16384 <= self.max_frame_size <= 2**24 - 1:
            raise ValueError("H2Limits: max_frame_size must be within 16384..16777215")
        if not 1 <= self.stream_window <= 2**31 - 1:
            raise ValueError("H2Limits: stream_window must be within 1..2**31-1")
        if not 65535 <= self.connection_window <= 2**31 - 1:
            raise ValueError("H2Limits: connection_window must be within 65535..2**31-1")
        if min(self.max_concurrent_streams, self.max_resets, self.max_pings,
               self.max_settings, self.max_header_block) < 1:
            raise ValueError("H2Limits: stream, reset, control and header limits must be >= 1")




class _QuietLog:
    """hpack logs every integer it codes at DEBUG through :mod:`logging` (a fifth of a
    header block's cost even when DEBUG is off); the proxy never wants those lines."""

    @staticmethod
    def debug(*_args: object, **_kwargs: object) -> None:
        return None


hpack.hpack.log = _QuietLog()  # type: ignore[assignment]

# ------------------------------------------------------------------------- header fields

CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
     b"http2-settings")
)
"""Fields HTTP/2 forbids (RFC 9113 §8.2.2); ``te`` is allowed only as ``te: trailers``."""

_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+").fullmatch
_VALUE = re.compile(rb"(?:[^\x00\n\r\t ](?:[^\x00\n\r]*[^\x00\n\r\t ])?)?").fullmatch
_SECRET = frozenset((b"authorization", b"proxy-authorization"))
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path"))
_EMPTY: Headers = ()


def check_fields(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Regular fields validated for sending, in one pass; credentials never indexed.

    A field HTTP/2 forbids, an uppercase or malformed name, or a value with NUL/CR/LF or
    surrounding whitespace is our caller's bug (:class:`LocalProtocolError`): the conversion
    helpers strip what HTTP/1 allows and HTTP/2 does not. Authorization fields and short
    cookies become HPACK never-indexed, as h2 and nghttp2 do (no compression oracle).
    """
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if not _NAME(name) or not _VALUE(value) or name in CONNECTION_SPECIFIC or (
                name == b"te" and value != b"trailers"):
            raise LocalProtocolError(f"refusing to send HTTP/2 field {name!r}: {value[:60]!r}")
        if name in _SECRET or (name == b"cookie" and len(value) < 20):
            out.append(NeverIndexedHeaderTuple(name, value))
        else:
            out.append((name, value))
    return out


def request_fields(method: bytes, scheme: bytes, authority: bytes, path: bytes,
                   headers: Iterable[tuple[bytes, bytes]] = ()) -> list[tuple[bytes, bytes]]:
    """A full request header list (pseudo-headers first); CONNECT carries authority only."""
    if method == b"CONNECT":
        pseudo = [(b":method", method), (b":authority", authority)]
    else:
        pseudo = [(b":method", method), (b":scheme", scheme), (b":path", path)]
        if authority:
            pseudo.append((b":authority", authority))
    for name, value in pseudo:
        if not value or not _VALUE(value) or b" " in value:
            raise LocalProtocolError(f"refusing to send {name.decode()} {value[:60]!r}")
    return pseudo + check_fields(headers)


def response_fields(status: int, headers: Iterable[tuple[bytes, bytes]] = ()) -> list[
        tuple[bytes, bytes]]:
    """A full response header list: ``:status`` then the checked fields."""
    if not 100 <= status <= 999:
        raise LocalProtocolError(f"refusing to send status {status}")
    return [(b":status", b"%d" % status), *check_fields(headers)]


def _split_head(headers: Iterable[tuple[bytes, bytes]]) -> tuple[
        dict[bytes, bytes], list[tuple[bytes, bytes]]]:
    """Leading pseudo-headers (no repeats) and the regular fields of a full header list."""
    items = list(headers)
    split = next((i for i, (name, _) in enumerate(items) if name[:1] != b":"), len(items))
    pseudo = dict(items[:split])
    if len(pseudo) != split or any(name[:1] == b":" for name, _ in items[split:]):
        raise LocalProtocolError(f"pseudo-headers must lead, once each: {items[:12]!r}")
    return pseudo, items[split:]


def _end_to_end(headers: Headers) -> list[tuple[bytes, bytes]]:
    """HTTP/1 fields minus the connection-specific ones and those Connection names;
    ``te`` survives only as ``te: trailers``."""
    drop = CONNECTION_SPECIFIC
    named = [v for n, v in headers if n == b"connection"]
    if named:
        drop = drop.union(*(options(v) for v in named)) - {b"host"}
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name == b"te":
            if b"trailers" in options(value):
                out.append((b"te", b"trailers"))
        elif name not in drop and name != b"host":
            out.append((name, value))
    return out


def h1_request_to_h2(req: Request, *, scheme: bytes = b"http") -> list[tuple[bytes, bytes]]:
    """HTTP/2 header list for an HTTP/1 request (RFC 9113 §8.3.1), checked."""
    return request_fields(*h1_request_head(req, scheme=scheme))


def h1_request_head(req: Request, *, scheme: bytes = b"http") -> tuple[
        bytes, bytes, bytes, bytes, list[tuple[bytes, bytes]]]:
    """``(method, scheme, authority, path, fields)`` of the HTTP/2 request for an HTTP/1 one,
    not yet checked: :meth:`H2Client.send_request` checks them (once, as it sends).

    ``:authority`` comes from an absolute-form target, else from Host (and Host is dropped:
    the two must not disagree); ``scheme`` is used unless the target names one.
    """
    target, authority = req.target, b""
    if req.method == b"CONNECT":
        return b"CONNECT", b"", target, b"", _end_to_end(req.headers)
    if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        scheme, _, rest = target.partition(b"://")
        scheme = scheme.lower()
        slash = rest.find(b"/")
        authority, target = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
    else:
        authority = next((v for n, v in req.headers if n == b"host"), b"")
    return req.method, scheme, authority, target, _end_to_end(req.headers)


def h1_response_to_h2(resp: Response) -> list[tuple[bytes, bytes]]:
    """HTTP/2 header list for an HTTP/1 response head."""
    return response_fields(resp.status, _end_to_end(resp.headers))


def _joined_cookies(headers: Headers) -> list[tuple[bytes, bytes]]:
    """HTTP/2 cookie crumbs joined with ``; `` into one field (RFC 9113 §8.2.3)."""
    out: list[tuple[bytes, bytes]] = []
    crumbs: list[bytes] = []
    for name, value in headers:
        if name == b"cookie":
            if not crumbs:
                out.append((b"cookie", b""))  # placeholder keeps the first cookie's position
                at = len(out) - 1
            crumbs.append(value)
        elif name not in CONNECTION_SPECIFIC and name != b"host":
            out.append((name, value))
    if crumbs:
        out[at] = (b"cookie", b"; ".join(crumbs))
    return out


def _content_length(headers: Headers, end_stream: bool) -> int | None:
    """The declared body length (0 when the head ended the stream), None if unknown."""
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                raise RemoteProtocolError(ErrorCode.BAD_CONTENT_LENGTH, f"{value[:40]!r}")
            return int(value)
    return 0 if end_stream else None


def h2_request_to_h1(ev: RequestHeaders) -> Request:
    """HTTP/1.1 request for an HTTP/2 one: Host from ``:authority``, cookies joined, framing
    from content-length (chunked when unknown). A head with no authority at all is refused
    (:class:`RemoteProtocolError`, MISSING_HOST), as HTTP/1.1 needs a Host."""
    fields = _joined_cookies(ev.headers)
    host = ev.authority or next((v for n, v in ev.headers if n == b"host"), b"")
    if not host:
        raise RemoteProtocolError(ErrorCode.MISSING_HOST, "no :authority and no host")
    target = ev.authority if ev.method == b"CONNECT" else ev.path
    return Request(
        method=ev.method, target=target, headers=((b"host", host), *fields),
        content_length=_content_length(ev.headers, ev.end_stream),
    )


_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def h2_response_to_h1(ev: ResponseHeaders) -> Response:
    """HTTP/1.1 response head for an HTTP/2 one (reason phrase from the status)."""
    return Response(
        status=ev.status, reason=_REASONS.get(ev.status, b""),
        headers=tuple(_joined_cookies(ev.headers)),
        content_length=_content_length(ev.headers, ev.end_stream),
    )


# ------------------------------------------------------------------------------- guards

_FRAME_HEAD = struct.Struct(">BHBBL")
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _CONTINUATION = 0, 1, 3, 4, 5, 6, 9
_END_HEADERS, _ACK = 0x4, 0x1
_PREFACE_LEN = 24


class _Rate:
    """Trips when more than ``limit`` hits fall within ``window_s`` (memory: limit + 1)."""

    __slots__ = ("_clock", "_limit", "_times", "_window")

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        self._limit, self._window, self._clock = limit, window_s, clock
        self._times: deque[float] = deque(maxlen=limit + 1)

    def hit(self) -> bool:
        now = self._clock()
        self._times.append(now)
        return len(self._times) > self._limit and now - self._times[0] <= self._window


@dataclass(frozen=True, slots=True)
class _Trip:
    """Where the scan stopped: bytes before ``offset`` are safe for h2, the rest is not."""

    offset: int
    code: H2ErrorCode
    event: ConnectionAbuse | ProtocolViolation


class _InboundGuard:
    """Reads the 9-byte frame headers of the peer's raw byte stream ahead of h2.

    Working on frame headers alone means a flood is refused when its first excess frame
    *announces* itself, before its payload is buffered anywhere. ``incomplete(sid)`` tells
    whether a reset of ``sid`` counts (the stream is not finished on our side).
    """

    def __init__(self, limits: H2Limits, *, server: bool, clock: Callable[[], float],
                 incomplete: Callable[[int], bool]) -> None:
        self._limits = limits
        self._server = server
        self._incomplete = incomplete
        self._skip = _PREFACE_LEN if server else 0  # h2 checks the preface itself
        self._partial = b""
        self._left = 0  # payload bytes of the current frame still to pass
        self._in_block = False
        self._block = self._continuations = 0
        self._highest = self._opened = self._resets = 0
        self._reset_rate = _Rate(limits.max_resets, limits.reset_window_s, clock)
        self._pings = _Rate(limits.max_pings, limits.control_window_s, clock)
        self._settings = _Rate(limits.max_settings, limits.control_window_s, clock)

    def scan(self, data: bytes) -> _Trip | None:
        """None when all of ``data`` may go to h2, else where to cut and why."""
        n, pos = len(data), 0
        if self._skip:
            pos = min(self._skip, n)
            self._skip -= pos
        while True:
            if self._left:
                step = min(self._left, n - pos)
                pos += step
                self._left -= step
            if pos >= n:
                return None
            start = pos - len(self._partial)
            if self._partial or n - pos < 9:
                head = self._partial + data[pos : pos + 9 - len(self._partial)]
                pos += len(head) - len(self._partial)
                if len(head) < 9:
                    self._partial = head
                    return None
                self._partial = b""
                hi, lo, ftype, flags, sid = _FRAME_HEAD.unpack(head)
            else:
                hi, lo, ftype, flags, sid = _FRAME_HEAD.unpack_from(data, pos)
                pos += 9
            length = hi << 16 | lo
            trip = self._inspect(length, ftype, flags, sid & 0x7FFFFFFF)
            if trip is not None:
                return _Trip(max(start, 0), *trip)
            self._left = length

    def _inspect(self, length: int, ftype: int, flags: int, sid: int) -> tuple[
            H2ErrorCode, ConnectionAbuse | ProtocolViolation] | None:
        limits = self._limits
        if length > limits.max_frame_size:
            return H2ErrorCode.FRAME_SIZE_ERROR, ProtocolViolation(
                H2ErrorCode.FRAME_SIZE_ERROR,
                f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE {limits.max_frame_size}")
        if ftype == _CONTINUATION:
            return self._continuation(length, flags) if self._in_block else None
        if ftype in (_HEADERS, _PUSH_PROMISE):
            if self._server and ftype == _HEADERS and sid & 1 and sid > self._highest:
                self._highest = sid
                self._opened += 1
            if not flags & _END_HEADERS and not self._in_block:
                self._in_block, self._block, self._continuations = True, length, 0
            if length > limits.max_header_block:
                return _abuse(AbuseKind.CONTINUATION_FLOOD, f"header block over {length} bytes")
        elif ftype == _RST_STREAM and self._server:
            return self._reset(sid)
        elif ftype == _PING and not flags & _ACK and self._pings.hit():
            return _abuse(AbuseKind.PING_FLOOD, f"more than {limits.max_pings} PINGs "
                          f"in {limits.control_window_s:g} s")
        elif ftype == _SETTINGS and not flags & _ACK and self._settings.hit():
            return _abuse(AbuseKind.SETTINGS_FLOOD, f"more than {limits.max_settings} "
                          f"SETTINGS in {limits.control_window_s:g} s")
        return None

    def _continuation(self, length: int, flags: int) -> tuple[H2ErrorCode, ConnectionAbuse] | None:
        """Count a CONTINUATION of the open header block against both caps."""
        self._continuations += 1
        self._block += length
        if flags & _END_HEADERS:
            self._in_block = False
        limits = self._limits
        if self._continuations > limits.max_continuations or self._block > limits.max_header_block:
            return _abuse(AbuseKind.CONTINUATION_FLOOD,
                          f"header block reached {self._block} bytes in {self._continuations} "
                          f"CONTINUATION frames (caps {limits.max_header_block} bytes, "
                          f"{limits.max_continuations} frames)")
        return None

    def _reset(self, sid: int) -> tuple[H2ErrorCode, ConnectionAbuse] | None:
        """Count a client RST_STREAM of an unfinished stream; trip on rate or ratio."""
        if not self._incomplete(sid):
            return None
        self._resets += 1
        limits = self._limits
        if self._reset_rate.hit():
            return _abuse(AbuseKind.RAPID_RESET, f"more than {limits.max_resets} resets in "
                          f"{limits.reset_window_s:g} s")
        if self._opened >= limits.reset_ratio_after and (
                self._resets > self._opened * limits.reset_ratio):
            return _abuse(AbuseKind.RAPID_RESET, f"{self._resets} of {self._opened} streams "
                          "reset before completion")
        return None


def _abuse(kind: AbuseKind, detail: str) -> tuple[H2ErrorCode, ConnectionAbuse]:
    return H2ErrorCode.ENHANCE_YOUR_CALM, ConnectionAbuse(kind, detail)


# ------------------------------------------------------------------- the h2 connection


_LOCAL_END, _REMOTE_END, _BOTH_ENDS, _HEAD_SENT = 1, 2, 3, 4  # per-stream flags

# How many closed streams a connection remembers (how each closed), for the frames that cross
# a close on the wire: after our RST_STREAM they are stream errors, not connection errors.
# h2 keeps 2**16, about 6 MB on every long-lived connection (a pooled upstream, a peer
# proxy's) once that many streams went by; a frame crosses a close within about one round
# trip, and 4096 streams is far more than one round trip carries.
_CLOSED_STREAMS_KEPT = 4096


class _Pending:
    """Bytes of one stream waiting for flow-control window, and what follows them."""

    __slots__ = ("data", "end", "offset", "trailers")

    def __init__(self) -> None:
        self.data = b""
        self.offset = 0
        self.end = False
        self.trailers: list[tuple[bytes, bytes]] | None = None

    def __len__(self) -> int:
        return len(self.data) - self.offset


class _Endpoint:
    """What client and server share: guards, stream bookkeeping, queued sends, events."""

    _client_side = False

    def __init__(self, limits: H2Limits | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits = limits or H2Limits()
        self._conn = conn = _Connection(h2.config.H2Configuration(
            client_side=self._client_side, header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False,
        ), limits.max_concurrent_streams)
        conn.encoder, conn.decoder = MemoEncoder(), MemoDecoder()
        conn._closed_streams = h2.utilities.SizeLimitDict(size_limit=_CLOSED_STREAMS_KEPT)
        conn.local_settings = h2.settings.Settings(client=self._client_side, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
        })
        conn.max_inbound_frame_size = limits.max_frame_size
        conn.decoder.max_header_list_size = limits.max_header_list_size
        conn.initiate_connection()
        if limits.connection_window > 65535:
            conn.increment_flow_control_window(limits.connection_window - 65535)
        self._guard = _InboundGuard(limits, server=not self._client_side, clock=clock,
                                    incomplete=self._unfinished)
        self._streams: dict[int, int] = {}  # active stream id -> _LOCAL_END | _REMOTE_END | ...
        self._pending: dict[int, _Pending] = {}
        self._outbox = b""  # frames written around h2 (graceful GOAWAY), kept in order
        self._highest_peer = 0  # highest peer-opened stream we reported
        self._highest_local = 0  # highest stream we opened
        self._closed = False
        self._goaway_received = False
        self._handlers: dict[type[h2.events.Event], Callable[[Any, list[Event]], None]] = {
            h2.events.RequestReceived: self._on_request,
            h2.events.ResponseReceived: self._on_response,
            h2.events.InformationalResponseReceived: self._on_informational,
            h2.events.DataReceived: self._on_data,
            h2.events.TrailersReceived: self._on_trailers,
            h2.events.StreamReset: self._on_reset,
            _Refused: self._on_refused,
            _GoAway: self._on_goaway,
        }

    def trust_peer(self) -> None:
        """The peer is a mesh proxy that proved its identity (mTLS) and checks every field
        it sends (:func:`check_fields`): skip h2's inbound header validation, a chain of
        generators per field that costs more than the rest of receiving a head. What is
        read still passes our own checks before it leaves (``check_fields`` towards HTTP/2,
        the HTTP/1 writer's towards an app). Never call it for a connection from a client."""
        config = self._conn.config
        config.validate_inbound_headers = False
        config.normalize_inbound_headers = False

    # -- state ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection is finished (abuse, violation, or our error GOAWAY)."""
        return self._closed

    @property
    def active_streams(self) -> int:
        """Streams not yet finished in both directions (drain: close when this is 0)."""
        return len(self._streams)

    def queued(self, stream_id: int) -> int:
        """Bytes accepted by :meth:`send_data` still waiting for the peer's window."""
        pending = self._pending.get(stream_id)
        return len(pending) if pending is not None else 0

    def send_window(self, stream_id: int) -> int:
        """Bytes :meth:`send_data` would hand to the connection right now."""
        if stream_id not in self._streams or self._closed:
            return 0
        return max(0, self._conn.local_flow_control_window(stream_id) - self.queued(stream_id))

    # -- receiving --------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; returns the events they caused, in order."""
        if self._closed or not data:
            return []
        trip = self._guard.scan(data)
        if trip is None:
            return self._process(data)
        events = self._process(data[: trip.offset]) if trip.offset else []
        if not self._closed:
            self._close(trip.code, trip.event)
            events.append(trip.event)
        return events

    def acknowledge_received(self, stream_id: int, n: int) -> None:
        """Hand ``n`` flow-controlled bytes of ``stream_id`` back to the peer's window.

        Call it once the bytes left the proxy (forwarded), also for data that was dropped:
        the connection window is shared, so unacknowledged bytes stall every stream.
        """
        if self._closed or n <= 0:
            return
        try:
            self._conn.acknowledge_received_data(n, stream_id)
        except h2.exceptions.ProtocolError as exc:
            raise LocalProtocolError(f"acknowledge on stream {stream_id}: {exc}") from exc

    def _process(self, data: bytes) -> list[Event]:
        try:
            raw = self._conn.receive_data(data)
        except h2.exceptions.DenialOfServiceError as exc:  # HPACK bomb: h2 sent the GOAWAY
            self._closed = True
            return [ConnectionAbuse(AbuseKind.HEADER_LIST_TOO_LARGE, str(exc))]
        except h2.exceptions.ProtocolError as exc:
            self._closed = True
            name, text = type(exc).__name__, str(exc)
            detail = text if text.startswith(name) else f"{name}: {text}"
            return [ProtocolViolation(exc.error_code, detail)]
        out: list[Event] = []
        handlers = self._handlers
        flush = False
        for ev in raw:
            handler = handlers.get(type(ev))
            if handler is not None:
                handler(ev, out)
            elif isinstance(ev, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                flush = True
        if flush and self._pending:
            self._flush_all(out)
        return out

    def _on_request(self, ev: h2.events.RequestReceived, out: list[Event]) -> None:
        raise LocalProtocolError("unreachable: a client receives no requests")

    def _on_response(self, ev: h2.events.ResponseReceived, out: list[Event]) -> None:
        raise LocalProtocolError("unreachable: a server receives no responses")

    def _on_informational(self, ev: Any, out: list[Event]) -> None:
        raise LocalProtocolError("unreachable: a server receives no responses")

    def _on_data(self, ev: h2.events.DataReceived, out: list[Event]) -> None:
        end = ev.stream_ended is not None
        out.append(Data(ev.stream_id, ev.data, ev.flow_controlled_length, end))
        if end:
            self._ended(ev.stream_id, _REMOTE_END)

    def _on_trailers(self, ev: h2.events.TrailersReceived, out: list[Event]) -> None:
        out.append(Trailers(ev.stream_id, tuple(ev.headers)))
        self._ended(ev.stream_id, _REMOTE_END)

    def _on_reset(self, ev: h2.events.StreamReset, out: list[Event]) -> None:
        if ev.stream_id in self._streams:  # not when we already reported it (GOAWAY)
            out.append(StreamReset(ev.stream_id, ev.error_code, ev.remote_reset))
            self._forget(ev.stream_id)

    def _on_refused(self, ev: _Refused, out: list[Event]) -> None:
        out.append(StreamRefused(ev.stream_id, ev.reason))
        self._highest_peer = ev.stream_id

    def _on_goaway(self, ev: _GoAway, out: list[Event]) -> None:
        self._goaway_received = True
        out.append(ConnectionTerminated(ev.code, ev.last_stream_id, ev.debug or b""))
        if self._client_side:  # our streams above last_stream_id were never processed
            for sid in [s for s in self._streams if s > ev.last_stream_id]:
                self.reset(sid)  # so h2 treats stray frames on it as a closed stream's
                out.append(StreamReset(sid, H2ErrorCode.REFUSED_STREAM, remote=True))

    # -- stream bookkeeping -----------------------------------------------------------

    def _ended(self, stream_id: int, end: int) -> None:
        flags = self._streams.get(stream_id)
        if flags is None:
            return
        flags |= end
        if flags & _BOTH_ENDS == _BOTH_ENDS:
            del self._streams[stream_id]
            self._prune(stream_id)
        else:
            self._streams[stream_id] = flags

    def _forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        self._pending.pop(stream_id, None)
        self._prune(stream_id)

    def _prune(self, stream_id: int) -> None:
        """Drop a closed stream from h2's table as soon as it closes.

        h2 keeps closed streams in ``H2Connection.streams`` (each with its state machine,
        two window managers, header lists) until something counts the open ones
        (``_open_streams``, run when a stream opens): on a long-lived connection that goes
        quiet (a pooled upstream, a peer proxy's) the last burst would stay for good. This
        is h2's own pruning, done per stream: the close reason moves to its bounded
        ``_closed_streams``, so late frames on the stream are answered exactly as h2 would.
        """
        conn = self._conn
        stream = conn.streams.get(stream_id)
        if stream is not None and stream.closed:
            del conn.streams[stream_id]
            conn._closed_streams[stream_id] = stream.closed_by

    def _unfinished(self, stream_id: int) -> bool:
        """Does a client reset of ``stream_id`` count as abandoning work (rapid reset)?"""
        flags = self._streams.get(stream_id)
        if flags is None:
            return stream_id > self._highest_peer  # not even seen yet: opened in this read
        return not flags & _LOCAL_END

    def _writable(self, stream_id: int, *, body: bool = False) -> bool:
        """False for a stream that is gone (reset, or finished both ways): writes to it are
        dropped, as a reset often crosses the proxy's reply. Unknown ids, writes after our
        own end of stream, and a body before the head (h2 would send it) are our caller's
        bugs (LocalProtocolError)."""
        flags = self._streams.get(stream_id)
        if flags is not None and not self._closed:
            if flags & _LOCAL_END or (
                    (pending := self._pending.get(stream_id)) is not None and pending.end):
                raise LocalProtocolError(f"stream {stream_id}: written after end_stream")
            if body and not flags & _HEAD_SENT:
                raise LocalProtocolError(f"stream {stream_id}: body before the head")
            return True
        if stream_id <= max(self._highest_peer, self._highest_local) or self._closed:
            return False
        raise LocalProtocolError(f"stream {stream_id} was never opened")

    # -- sending ----------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now (may be empty)."""
        if self._outbox:
            out, self._outbox = self._outbox + self._conn.data_to_send(), b""
            return out
        return self._conn.data_to_send()

    def send_headers(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]],
                     end_stream: bool = False) -> None:
        """Send a full header list (pseudo-headers first, checked like :func:`check_fields`).

        Prefer :meth:`H2Client.send_request` / :meth:`H2Server.send_response`; this is the
        generic form for heads that are already HTTP/2 lists.
        """
        if not self._writable(stream_id):
            return
        pseudo, fields = _split_head(headers)
        if self._streams[stream_id] & _HEAD_SENT or not pseudo:
            if pseudo or not end_stream:
                raise LocalProtocolError(f"stream {stream_id}: a second head must be "
                                         "trailers (no pseudo-headers, end_stream)")
            self.send_trailers(stream_id, fields)
            return
        status = pseudo.pop(b":status", b"")
        interim = status[:1] == b"1"
        if pseudo or self._client_side or not (status.isdigit() and len(status) == 3) or (
                interim and end_stream):
            raise LocalProtocolError(f"stream {stream_id}: want a response head, not "
                                     f"{[*pseudo, b':status']!r} = {status!r}")
        self._send_head(stream_id, response_fields(int(status), fields), end_stream,
                        interim=interim)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        """Send body bytes within the peer's flow-control window; the rest is queued and
        goes out as WINDOW_UPDATEs arrive. Returns the bytes still queued on the stream
        (stop reading the source while > 0; :class:`WindowOpened` says it drained).
        Empty data without ``end_stream`` sends nothing (empty frames look like a flood)."""
        if not self._writable(stream_id, body=True) or not (data or end_stream):
            return 0
        conn = self._conn
        pending = self._pending.get(stream_id)
        try:
            if pending is None and len(data) <= min(
                    conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size):
                conn.send_data(stream_id, data, end_stream=end_stream)  # the common case
                if end_stream:
                    self._ended(stream_id, _LOCAL_END)
                return 0
            if pending is None:
                pending = _Pending()
            pending.data, pending.offset = pending.data[pending.offset :] + data, 0
            pending.end = end_stream
            return self._flush(stream_id, pending)
        except h2.exceptions.ProtocolError as exc:  # e.g. data before the head
            raise LocalProtocolError(f"stream {stream_id}: {exc}") from exc

    def send_trailers(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """End the stream with trailing fields (after any queued data)."""
        if not self._writable(stream_id, body=True):
            return
        fields = check_fields(headers)
        pending = self._pending.get(stream_id)
        if pending is not None:
            pending.trailers, pending.end = fields, True
        else:
            self._send_head(stream_id, fields, True)

    def reset(self, stream_id: int, code: int = H2ErrorCode.CANCEL) -> None:
        """RST_STREAM ``stream_id`` (a no-op for streams already gone)."""
        if stream_id not in self._streams or self._closed:
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError):  # h2 closed it already
            self._conn.reset_stream(stream_id, code)
        self._forget(stream_id)

    def goaway(self, code: int = H2ErrorCode.NO_ERROR, debug: bytes = b"",
               last_stream_id: int | None = None) -> None:
        """Send GOAWAY. NO_ERROR drains: streams up to ``last_stream_id`` (default: the last
        one we saw) finish, newer ones are refused; send 2**31-1 first for a two-step drain.
        Any other code ends the connection at once (:attr:`closed`)."""
        if self._closed:
            return
        last = self._highest_peer if last_stream_id is None else last_stream_id
        if code != H2ErrorCode.NO_ERROR:
            self._conn.close_connection(code, additional_data=debug, last_stream_id=last)
            self._closed = True
            return
        frame = GoAwayFrame(0, last_stream_id=last, error_code=0, additional_data=debug)
        self._outbox += self._conn.data_to_send() + frame.serialize()
        previous = self._conn.hm_draining_after
        self._conn.hm_draining_after = last if previous is None else min(previous, last)

    def _send_head(self, stream_id: int, fields: list[tuple[bytes, bytes]],
                   end_stream: bool, *, interim: bool = False) -> None:
        if stream_id in self._pending:
            raise LocalProtocolError(f"stream {stream_id}: a head after queued data")
        try:
            self._conn.send_headers(stream_id, fields, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            raise LocalProtocolError(f"stream {stream_id}: {exc}") from exc
        if not interim:
            self._streams[stream_id] |= _HEAD_SENT
        if end_stream:
            self._ended(stream_id, _LOCAL_END)

    def _flush(self, stream_id: int, pending: _Pending) -> int:
        """Send what the windows allow; returns the bytes left queued."""
        conn = self._conn
        window = conn.local_flow_control_window(stream_id)
        frame = conn.max_outbound_frame_size
        view = memoryview(pending.data)
        ended = False
        while len(pending) and window > 0:
            size = min(len(pending), window, frame)
            start = pending.offset
            pending.offset += size
            ended = not len(pending) and pending.end and pending.trailers is None
            conn.send_data(stream_id, view[start : start + size], end_stream=ended)
            window -= size
        if len(pending):
            self._pending[stream_id] = pending
            return len(pending)
        self._pending.pop(stream_id, None)
        if pending.trailers is not None:
            self._send_head(stream_id, pending.trailers, True)
        elif pending.end and not ended:
            conn.send_data(stream_id, b"", end_stream=True)
            ended = True
        if ended:
            self._ended(stream_id, _LOCAL_END)
        return 0

    def _flush_all(self, out: list[Event]) -> None:
        """A window opened: move queued bytes, oldest queue first."""
        for stream_id, pending in list(self._pending.items()):
            if self._conn.outbound_flow_control_window <= 0:
                return
            if self._flush(stream_id, pending) == 0:
                out.append(WindowOpened(stream_id))

    def _close(self, code: H2ErrorCode, event: ConnectionAbuse | ProtocolViolation) -> None:
        """GOAWAY(code) naming the last stream h2 processed, then ignore the peer."""
        debug = event.kind.value if isinstance(event, ConnectionAbuse) else "protocol-error"
        self._conn.close_connection(code, additional_data=debug.encode())
        self._closed = True


class H2Server(_Endpoint):
    """The proxy's side of a connection a client opened (inbound, or the app's outbound)."""

    _client_side = False

    def send_response(self, stream_id: int, status: int,
                      headers: Iterable[tuple[bytes, bytes]] = (),
                      end_stream: bool = False) -> None:
        """Send a final response head."""
        if self._writable(stream_id):
            self._send_head(stream_id, response_fields(status, headers), end_stream)

    def send_informational(self, stream_id: int, status: int,
                           headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        """Send a 1xx head (100 Continue, 103 Early Hints); 101 does not exist in HTTP/2."""
        if not 100 <= status < 200 or status == 101:
            raise LocalProtocolError(f"status {status} is not a valid HTTP/2 interim status")
        if self._writable(stream_id):
            self._send_head(stream_id, response_fields(status, headers), False, interim=True)

    def _on_request(self, ev: h2.events.RequestReceived, out: list[Event]) -> None:
        headers = ev.headers
        pseudo: dict[bytes, bytes] = {}
        split = 0
        for name, value in headers:  # h2 validated: pseudo-headers come first
            if name[:1] != b":":
                break
            pseudo[name] = value
            split += 1
        end = ev.stream_ended is not None
        sid = ev.stream_id
        out.append(RequestHeaders(
            sid, pseudo.get(b":method", b""), pseudo.get(b":scheme", b""),
            pseudo.get(b":authority", b""), pseudo.get(b":path", b""),
            tuple(headers[split:]), end,
        ))
        self._streams[sid] = _REMOTE_END if end else 0
        self._highest_peer = sid


class H2Client(_Endpoint):
    """The proxy's side of a connection to an upstream (pooled, multiplexed)."""

    _client_side = True

    @property
    def max_concurrent_streams(self) -> int:
        """The peer's SETTINGS_MAX_CONCURRENT_STREAMS (unbounded until its SETTINGS)."""
        return int(self._conn.remote_settings.max_concurrent_streams)

    def can_open_stream(self) -> bool:
        """Room for one more request: not closed, no GOAWAY, under the peer's limit."""
        return not (self._closed or self._goaway_received) and (
            len(self._streams) < self.max_concurrent_streams)

    def send_request(self, method: bytes, scheme: bytes, authority: bytes, path: bytes, *,
                     headers: Iterable[tuple[bytes, bytes]] = (),
                     end_stream: bool = False) -> int:
        """Open a stream with a request head; returns its id."""
        if not self.can_open_stream():
            raise LocalProtocolError("no stream available on this connection; check "
                                     "can_open_stream() and open another connection")
        stream_id = self._conn.get_next_available_stream_id()
        self._open(stream_id, request_fields(method, scheme, authority, path, headers),
                   end_stream)
        return stream_id

    def send_headers(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]],
                     end_stream: bool = False) -> None:
        """Like :meth:`_Endpoint.send_headers`; on a new stream id it opens the stream."""
        if stream_id in self._streams or stream_id <= self._highest_local:
            super().send_headers(stream_id, headers, end_stream)
            return
        pseudo, fields = _split_head(headers)
        if pseudo.keys() - _REQUEST_PSEUDO or b":method" not in pseudo:
            raise LocalProtocolError(f"not a request head: {sorted(pseudo)!r}")
        self._open(stream_id, request_fields(
            pseudo[b":method"], pseudo.get(b":scheme", b""), pseudo.get(b":authority", b""),
            pseudo.get(b":path", b""), fields), end_stream)

    def _open(self, stream_id: int, fields: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self._streams[stream_id] = 0
        self._highest_local = stream_id
        try:
            self._send_head(stream_id, fields, end_stream)
        except LocalProtocolError:
            self._streams.pop(stream_id, None)
            raise

    def _on_response(self, ev: h2.events.ResponseReceived, out: list[Event]) -> None:
        headers = ev.headers
        end = ev.stream_ended is not None
        out.append(ResponseHeaders(ev.stream_id, int(headers[0][1]), tuple(headers[1:]), end))
        if end:
            self._ended(ev.stream_id, _REMOTE_END)

    def _on_informational(self, ev: h2.events.InformationalResponseReceived,
                          out: list[Event]) -> None:
        headers = ev.headers
        out.append(InformationalResponse(ev.stream_id, int(headers[0][1]), tuple(headers[1:])))
