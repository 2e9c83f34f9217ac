"""Drive an HTTP/1 reader the way the proxy would, in every feeding mode, and normalise.

``outcome()`` returns what a reader made of a byte stream: the events (adjacent Data merged,
since how a body is split depends on how bytes arrived) and the error, if any, as
``(code, status)``. The modes: whole buffer, one byte at a time, or given split points; each
with or without the llhttp fast path. Any exception other than RemoteProtocolError escapes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from hybridmesh.proxy.protocols.http1 import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    ErrorCode,
    Event,
    Limits,
    ReaderState,
    RemoteProtocolError,
    RequestReader,
    ResponseReader,
)

Reader = RequestReader | ResponseReader
Outcome = tuple[tuple[Event, ...], tuple[ErrorCode, int] | None]


def drain(reader: Reader, sink: list[Event]) -> bool:
    """Pull events into ``sink`` until NEED_DATA; False once the stream is over."""
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            return reader.state not in (ReaderState.PAUSED,)
        sink.append(event)
        if isinstance(event, ConnectionClosed):
            return False


def merge_data(events: Iterable[Event]) -> tuple[Event, ...]:
    """Adjacent Data events merged into one."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + event.data)
        else:
            out.append(event)
    return tuple(out)


def pieces(data: bytes, mode: str | Sequence[int]) -> list[bytes]:
    """``data`` cut as the mode says: "whole", "bytewise", or at the given offsets."""
    if mode == "whole":
        return [data]
    if mode == "bytewise":
        return [data[i : i + 1] for i in range(len(data))]
    offsets = [int(c) for c in mode if 0 <= int(c) <= len(data)]
    cuts = sorted({0, len(data), *offsets})
    return [data[a:b] for a, b in itertools.pairwise(cuts)]


def outcome(
    data: bytes,
    mode: str | Sequence[int] = "whole",
    *,
    fast: bool = True,
    eof: bool = True,
    expect: Sequence[bytes] | None = None,
    limits: Limits | None = None,
) -> Outcome:
    """Feed ``data`` (then EOF) to a fresh reader; a ResponseReader when ``expect`` is given."""
    reader: Reader
    if expect is None:
        reader = RequestReader(limits, fast_path=fast)
    else:
        reader = ResponseReader(limits, fast_path=fast)
        for method in expect:
            reader.expect(method)
    events: list[Event] = []
    try:
        for piece in [*pieces(data, mode), *([b""] if eof else [])]:
            reader.receive_data(piece)
            if not drain(reader, events):
                break
    except RemoteProtocolError as exc:
        return merge_data(events), (exc.code, exc.status)
    return merge_data(events), None
