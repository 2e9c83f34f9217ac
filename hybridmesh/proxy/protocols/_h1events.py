"""HTTP/1.1 events (h11-shaped) and the size limits a reader enforces.

Events are frozen values: the reader produces them, the proxy inspects or rebuilds them
(``dataclasses.replace``), the serializers turn them back into canonical bytes.

Header names are stored **lowercase** (as HTTP/2 requires, so routing and policy match one
spelling); values are stored without surrounding whitespace, exactly as received otherwise.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TypeVar, cast

from mypy_extensions import mypyc_attr  # a no-op interpreted; mypyc reads it

_E = TypeVar("_E")

__all__ = [
    "END_OF_MESSAGE",
    "MAKE_REQUEST",
    "MAKE_RESPONSE",
    "NEED_DATA",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Event",
    "Framing",
    "Headers",
    "InformationalResponse",
    "Limits",
    "NeedData",
    "ParsedHeaders",
    "Request",
    "Response",
]

Headers = tuple[tuple[bytes, bytes], ...]
"""(lowercase name, value) pairs in the order received."""


@mypyc_attr(native_class=False)  # compiled, a tuple subclass must stay a Python class
class ParsedHeaders(tuple[tuple[bytes, bytes], ...]):
    """Headers exactly as a reader produced them, hence already proven valid.

    The writers skip re-validating these; any edit (``+``, slicing, a new tuple) yields a
    plain tuple, which they validate. Only the readers, and ``peer_identity.vouched`` (fields
    checked with the writer's rules), construct this type.
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Request:
    """A request head.

    ``content_length`` is the body length when known (0: no body) and None for a chunked
    body; ``keep_alive`` is what the client asked for (HTTP/1.1 default, HTTP/1.0 opt-in).
    """

    method: bytes
    target: bytes
    headers: Headers
    http_version: bytes = b"1.1"
    keep_alive: bool = True
    content_length: int | None = 0


@dataclass(frozen=True, slots=True)
class Response:
    """A final (>= 200) response head.

    ``content_length`` is the declared length (also for HEAD/304 answers, where no body
    follows), None when the body is chunked or delimited by connection close.
    """

    status: int
    reason: bytes
    headers: Headers
    http_version: bytes = b"1.1"
    keep_alive: bool = True
    content_length: int | None = 0


def _maker(cls: type[_E]) -> Callable[[bytes | int, bytes, Headers, bytes, bool, int | None], _E]:
    """A constructor for the readers, which make one event per message: the frozen
    dataclass ``__init__`` sets each field through ``object.__setattr__`` (~0.5 µs for six),
    the slots' own descriptors do the same in ~0.3 µs. Same object, same fields."""
    new = object.__new__
    try:
        new(cls)
    except TypeError:  # compiled by mypyc (hybridmesh.native): its constructor is the fast one
        return cast("Callable[[bytes | int, bytes, Headers, bytes, bool, int | None], _E]", cls)
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    s0, s1, s2, s3, s4, s5 = (getattr(cls, name).__set__ for name in names)

    def make(a: bytes | int, b: bytes, c: Headers, d: bytes, e: bool,  # noqa: PLR0917
             f: int | None) -> _E:  # the dataclass fields, in order
        event = new(cls)
        s0(event, a)
        s1(event, b)
        s2(event, c)
        s3(event, d)
        s4(event, e)
        s5(event, f)
        return event

    return make


@dataclass(frozen=True, slots=True)
class InformationalResponse:
    """A 1xx interim response (100 Continue, 103 Early Hints); the final one follows."""

    status: int
    reason: bytes
    headers: Headers
    http_version: bytes = b"1.1"


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of message body (already de-chunked)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The message body is complete; chunked bodies may carry trailers."""

    trailers: Headers = ()


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed cleanly between messages."""


class NeedData(enum.Enum):
    """Sentinel type returned by ``next_event()`` when more bytes are needed."""

    NEED_DATA = "need-data"


NEED_DATA = NeedData.NEED_DATA
MAKE_REQUEST = _maker(Request)
"""``Request(method, target, headers, http_version, keep_alive, content_length)``, faster
(all six arguments, positional): for the readers."""
MAKE_RESPONSE = _maker(Response)
"""``Response(status, reason, headers, http_version, keep_alive, content_length)``, faster."""
END_OF_MESSAGE = EndOfMessage()

Event = Request | Response | InformationalResponse | Data | EndOfMessage | ConnectionClosed


class Framing(enum.Enum):
    """How a message body is delimited on the wire (RFC 9112 §6.3)."""

    __hash__ = object.__hash__  # C-level identity hash: Framing keys hot-path dicts

    NONE = "none"  # no body at all (GET without length, HEAD answer, 204, 304, 1xx)
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"  # Transfer-Encoding: chunked
    CLOSE = "close"  # response body runs until the server closes (HTTP/1.0 style)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a peer may make us buffer before we refuse (Envoy/nginx-like defaults).

    ``max_head_size`` covers the start line, every header line and the blank line;
    trailers get the same two limits. ``max_chunk_line`` bounds a chunk-size line including
    extensions, so a peer cannot stream an endless extension.
    """

    max_head_size: int = 16 * 1024
    max_headers: int = 100
    max_start_line: int = 8 * 1024
    max_chunk_line: int = 1024

    def __post_init__(self) -> None:
        # The start line must be able to hit its own limit before the section limit, so
        # that incremental and whole-buffer parsing report the same error.
        if not 0 < self.max_start_line < self.max_head_size:
            raise ValueError("Limits: need 0 < max_start_line < max_head_size")
        if self.max_headers < 1 or self.max_chunk_line < 8:
            raise ValueError("Limits: max_headers >= 1 and max_chunk_line >= 8 required")
