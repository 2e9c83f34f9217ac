"""Protocol detection from the first bytes a client sends (Istio-style sniffing).

A listener that does not know what will arrive (``appProtocol`` unset) looks at the first few
bytes: a TLS ClientHello record, the HTTP/2 prior-knowledge preface, an HTTP/1 request line
that starts with a known method, or anything else (opaque TCP). The decision is a table of
byte patterns, one allowed-byte set per position; the patterns are prefix-free, so once a
prefix decides, no longer input can decide differently (tests check that).

Server-first protocols (MySQL, SMTP) send nothing until the server speaks, so a short prefix
can stay ambiguous forever: :class:`Detector` turns a ``timeout()`` (the caller's timer) or
end of stream into ``OPAQUE``. At most :data:`MAX_DETECT_BYTES` bytes are ever examined.

The upstream may speak first without being server-first: an HTTP/2 server sends its SETTINGS
frame on accept (grpcio does) and still waits for the client's preface.
:func:`http2_server_preface` tells that apart, so the inbound listener's early connection to
the app (preconnect.py) does not end detection as opaque when the app is a gRPC server.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hybridmesh.proxy.protocols.errors import LocalProtocolError

__all__ = [
    "HTTP1_METHODS",
    "HTTP2_PREFACE",
    "MAX_DETECT_BYTES",
    "Detection",
    "Detector",
    "Protocol",
    "detect",
    "http2_server_preface",
]

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_DETECT_BYTES = len(HTTP2_PREFACE)  # 24: the longest pattern decides the bound
HTTP1_METHODS: tuple[bytes, ...] = (
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
)


class Protocol(enum.Enum):
    """What a connection speaks; ``NEED_MORE`` means "not decided yet"."""

    TLS = "tls"
    HTTP2 = "http2"
    HTTP1 = "http1"
    OPAQUE = "opaque"
    NEED_MORE = "need-more"


@dataclass(frozen=True, slots=True)
class Detection:
    """A detection outcome and a human-readable reason (for logs and ``explain``)."""

    protocol: Protocol
    detail: str

    @property
    def decided(self) -> bool:
        """True once more bytes cannot change the outcome."""
        return self.protocol is not Protocol.NEED_MORE


_H2_FRAME_HEADER = 9
_H2_SETTINGS = 0x4
_H2_ACK = 0x1
_H2_MAX_PREFACE = 16384  # SETTINGS_MAX_FRAME_SIZE before the client's SETTINGS raised it

_ANY = bytes(range(256))
_VISIBLE = bytes(range(0x21, 0x7F))
_Pattern = tuple[bytes, ...]  # allowed byte values at each position


def _literal(text: bytes) -> _Pattern:
    return tuple(bytes([c]) for c in text)


# TLS record header (handshake 0x16, legacy version 3.0-3.4, 2 length bytes) + ClientHello (1).
_TLS: _Pattern = (b"\x16", b"\x03", bytes(range(5)), _ANY, _ANY, b"\x01")

_PATTERNS: tuple[tuple[Protocol, str, _Pattern], ...] = (
    (Protocol.TLS, "TLS ClientHello record", _TLS),
    (Protocol.HTTP2, "HTTP/2 prior-knowledge preface", _literal(HTTP2_PREFACE)),
    *(
        (Protocol.HTTP1, f"HTTP/1 request line ({m.decode()})", (*_literal(m + b" "), _VISIBLE))
        for m in HTTP1_METHODS
    ),
)

_NEED_MORE = Detection(Protocol.NEED_MORE, "ambiguous prefix")
_OPAQUE = Detection(Protocol.OPAQUE, "no known protocol prefix")


def _match(pattern: _Pattern, data: bytes) -> bool | None:
    """True: full match; None: data is a proper prefix of a match; False: mismatch."""
    for allowed, byte in zip(pattern, data, strict=False):
        if byte not in allowed:
            return False
    return True if len(data) >= len(pattern) else None


def detect(first_bytes: bytes) -> Detection:
    """Classify a connection from the bytes the client sent first (only 24 are examined)."""
    data = first_bytes[:MAX_DETECT_BYTES]
    pending = False
    for protocol, detail, pattern in _PATTERNS:
        outcome = _match(pattern, data)
        if outcome:
            return Detection(protocol, detail)
        pending = pending or outcome is None
    return _NEED_MORE if pending else _OPAQUE


class Detector:
    """Accumulates the first reads and a timer into one decision (pure: no clock inside).

    Feed each read with :meth:`feed`; when the caller's detection timer fires, call
    :meth:`timeout`; on end of stream, call :meth:`eof`. Once decided, :attr:`buffered`
    holds every byte fed, which the chosen protocol handler must consume first.
    """

    __slots__ = ("_buffer", "_result")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._result: Detection | None = None

    @property
    def result(self) -> Detection | None:
        """The decision, or None while undecided."""
        return self._result

    @property
    def buffered(self) -> bytes:
        """Every byte fed so far (to replay into the chosen handler)."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> Detection:
        """Add bytes read from the client; returns NEED_MORE or the final decision."""
        if self._result is not None:
            raise LocalProtocolError("Detector.feed() after the protocol was decided")
        self._buffer += data
        outcome = detect(bytes(self._buffer[:MAX_DETECT_BYTES]))
        if outcome.decided:
            self._result = outcome
        return outcome

    def timeout(self) -> Detection:
        """The detection window elapsed: an undecided connection is opaque TCP."""
        return self._settle("no decision within the detection window")

    def eof(self) -> Detection:
        """The client closed (half-closed) before a decision: treat the bytes as opaque."""
        return self._settle("client closed before the protocol was decided")

    def _settle(self, why: str) -> Detection:
        if self._result is None:
            self._result = Detection(Protocol.OPAQUE, why)
        return self._result


def http2_server_preface(first: bytes) -> bool:
    """Whether the bytes an upstream sent first are (the start of) an HTTP/2 server
    connection preface: a SETTINGS frame, not an ACK, on stream 0, of a length that is a
    multiple of 6 and fits the initial frame size (RFC 9113 §3.4, §6.5).

    Such an upstream is not a server-first protocol: the client's bytes still decide. A
    shorter read that is consistent so far counts too (the detection window bounds the
    wait); a banner (``220 ...``, a MySQL greeting) fails on its first bytes."""
    head = first[:_H2_FRAME_HEADER]
    if not head or head[0] != 0:  # no bytes, or a length over 65535
        return False
    if len(head) >= 3:
        length = int.from_bytes(head[:3], "big")
        if length % 6 or length > _H2_MAX_PREFACE:
            return False
    if len(head) >= 4 and head[3] != _H2_SETTINGS:
        return False
    if len(head) >= 5 and head[4] & _H2_ACK:
        return False
    stream = head[5:]  # 31-bit id 0; the reserved top bit is ignored on receipt
    return not (stream[:1] and stream[0] & 0x7F) and not any(stream[1:])
