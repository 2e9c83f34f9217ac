"""gRPC as the proxy sees it: a content-type, a status in trailers, a deadline header.

The proxy never decodes protobuf. It needs to know that an exchange is gRPC (so errors it
makes itself are gRPC errors a client library understands, not an HTML 503), what status
the call ended with (the ``grpc_response_status`` metric label), and the caller's deadline
(``grpc-timeout``) to bound its own retries. Message framing (5-byte length prefix) is here
for tests and for counting messages; payloads pass through untouched.

References: gRPC over HTTP/2 (PROTOCOL-HTTP2.md) and the HTTP-to-gRPC status mapping
(http-grpc-status-mapping.md) in the grpc/grpc repository.
"""

from __future__ import annotations

import enum
import math
import re
import struct
from dataclasses import dataclass

from hybridmesh.proxy.protocols._h1events import Headers

__all__ = [
    "GrpcFramingError",
    "GrpcStatus",
    "InvalidGrpcTimeout",
    "Message",
    "MessageReader",
    "call_status",
    "decode_message",
    "encode_message",
    "format_grpc_timeout",
    "is_grpc",
    "parse_grpc_timeout",
    "status_from_http",
    "trailers_only",
]


class GrpcStatus(enum.IntEnum):
    """The gRPC status codes (doc/statuscodes.md)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class InvalidGrpcTimeout(ValueError):
    """A ``grpc-timeout`` value that is not 1-8 digits and a unit (H M S m u n)."""


class GrpcFramingError(ValueError):
    """A length-prefixed message is malformed or larger than the reader allows."""


_GRPC_TYPE = re.compile(rb"application/grpc(?:[+;].*)?", re.IGNORECASE | re.DOTALL)


def is_grpc(headers: Headers) -> bool:
    """``content-type: application/grpc`` (``+proto``, ``+json``, parameters...).

    grpc-web (``application/grpc-web*``) is not gRPC over HTTP/2 (its trailers travel in
    the body), so it is not matched.
    """
    for name, value in headers:
        if name == b"content-type":
            return _GRPC_TYPE.fullmatch(value.strip()) is not None
    return False


def call_status(headers: Headers, trailers: Headers | None = None) -> tuple[int, str] | None:
    """(grpc-status, decoded grpc-message) of a call, or None when neither carries one.

    ``headers`` are the response head: a trailers-only response (an immediate error) puts
    the status there. ``trailers`` are the trailing fields of a normal response. A
    grpc-status that is not a number counts as UNKNOWN, as gRPC clients do.
    """
    for fields in (trailers, headers):
        if not fields:
            continue
        code: int | None = None
        message = ""
        for name, value in fields:
            if name == b"grpc-status":
                code = int(value) if value.isdigit() and len(value) < 4 else GrpcStatus.UNKNOWN
            elif name == b"grpc-message":
                message = _percent_decode(value)
        if code is not None:
            return code, message
    return None


_HTTP_TO_GRPC = {
    400: GrpcStatus.INTERNAL,
    401: GrpcStatus.UNAUTHENTICATED,
    403: GrpcStatus.PERMISSION_DENIED,
    404: GrpcStatus.UNIMPLEMENTED,
    429: GrpcStatus.UNAVAILABLE,
    502: GrpcStatus.UNAVAILABLE,
    503: GrpcStatus.UNAVAILABLE,
    504: GrpcStatus.UNAVAILABLE,
}


def status_from_http(status: int) -> GrpcStatus:
    """The status a gRPC client derives from a non-200 HTTP answer without grpc-status."""
    return _HTTP_TO_GRPC.get(status, GrpcStatus.UNKNOWN)


def trailers_only(code: int, message: str,
                  extra: Headers = ()) -> list[tuple[bytes, bytes]]:
    """Fields of a trailers-only error response: send them with ``:status`` 200 and
    ``end_stream=True`` (``H2Server.send_response(sid, 200, fields, end_stream=True)``).

    For the proxy's own failures, e.g. ``trailers_only(GrpcStatus.UNAVAILABLE, "no healthy
    endpoint for svc")``; ``extra`` adds fields such as ``hm-proxy-error``.
    """
    return [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"%d" % code),
        (b"grpc-message", _percent_encode(message)),
        *extra,
    ]


def _percent_encode(message: str) -> bytes:
    """grpc-message encoding: UTF-8, then %XX for bytes outside 0x20-0x7E and for '%'."""
    return b"".join(
        bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b
        for b in message.encode()
    )


_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")


def _percent_decode(value: bytes) -> str:
    """Inverse of :func:`_percent_encode`; malformed escapes are kept literally."""
    raw = _PERCENT.sub(lambda m: bytes((int(m.group(1), 16),)), value)
    return raw.decode("utf-8", "replace")


_TIMEOUT = re.compile(rb"([0-9]{1,8})([HMSmun])")
_UNIT_SECONDS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def parse_grpc_timeout(value: bytes) -> float:
    """Seconds named by a ``grpc-timeout`` value, e.g. ``b"250m"`` -> 0.25."""
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None:
        raise InvalidGrpcTimeout(f"grpc-timeout {value[:20]!r}: want 1-8 digits and H|M|S|m|u|n")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_grpc_timeout(seconds: float) -> bytes:
    """The finest ``grpc-timeout`` that fits 8 digits, rounded up (a forwarded deadline
    must never be shorter than the caller's)."""
    if not seconds > 0 or math.isinf(seconds):
        raise InvalidGrpcTimeout(f"a grpc-timeout must be positive and finite, not {seconds}")
    for unit in (b"n", b"u", b"m", b"S", b"M", b"H"):
        amount = math.ceil(seconds / _UNIT_SECONDS[unit] - 1e-9)
        if amount < 100_000_000:
            return b"%d%b" % (max(amount, 1), unit)
    raise InvalidGrpcTimeout(f"{seconds} s does not fit in grpc-timeout")


# ------------------------------------------------------------------- message framing

_PREFIX = struct.Struct(">BL")


@dataclass(frozen=True, slots=True)
class Message:
    """One length-prefixed gRPC message; ``compressed`` is the per-message flag."""

    payload: bytes
    compressed: bool = False


def encode_message(payload: bytes, *, compressed: bool = False) -> bytes:
    """A message as it travels in DATA frames: flag byte, 4-byte length, payload."""
    return _PREFIX.pack(int(compressed), len(payload)) + payload


def decode_message(data: bytes) -> Message:
    """Exactly one framed message (a unary request or response body)."""
    reader = MessageReader(max_message_size=len(data))
    messages = reader.feed(data)
    if len(messages) != 1 or reader.buffered:
        raise GrpcFramingError(f"expected one message, found {len(messages)} and "
                               f"{reader.buffered} bytes left over")
    return messages[0]


class MessageReader:
    """Splits a stream of DATA payloads into messages (any split of the bytes works).

    A message longer than ``max_message_size`` (gRPC's default receive limit is 4 MiB) is
    refused when its prefix arrives, before its payload is buffered.
    """

    def __init__(self, max_message_size: int = 4 * 1024 * 1024) -> None:
        self._max = max_message_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """Messages completed by ``data``."""
        buffer = self._buffer
        buffer += data
        out: list[Message] = []
        while len(buffer) >= 5:
            flag, length = _PREFIX.unpack_from(buffer)
            if flag > 1:
                raise GrpcFramingError(f"compressed-flag byte {flag} is neither 0 nor 1")
            if length > self._max:
                raise GrpcFramingError(f"message of {length} bytes exceeds {self._max}")
            if len(buffer) < 5 + length:
                break
            out.append(Message(bytes(buffer[5 : 5 + length]), bool(flag)))
            del buffer[: 5 + length]
        return out
