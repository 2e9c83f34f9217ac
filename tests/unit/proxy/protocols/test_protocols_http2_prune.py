"""h2's own stream table empties as streams close (not at the next stream's opening), and
late frames on a pruned stream are still handled as h2 handles a closed stream's."""

from __future__ import annotations

import pytest
from test_http2_wire import Wire

from hybridmesh.proxy.protocols import http2
from hybridmesh.proxy.protocols.http2 import (
    Data,
    H2ErrorCode,
    RequestHeaders,
    StreamReset,
    Trailers,
)


def open_call(wire: Wire, end: bool = True) -> int:
    sid = wire.client.send_request(b"POST", b"http", b"app", b"/svc.Echo/Say",
                                   headers=[(b"content-type", b"application/grpc")],
                                   end_stream=end)
    assert any(isinstance(ev, RequestHeaders) for ev in wire.take_server())
    return sid


def tables(wire: Wire) -> tuple[int, int]:
    return len(wire.client._conn.streams), len(wire.server._conn.streams)


def test_a_stream_finished_both_ways_leaves_both_tables() -> None:
    wire = Wire()
    sid = open_call(wire)
    wire.server.send_response(sid, 200)
    wire.server.send_data(sid, b"answer")
    wire.server.send_trailers(sid, [(b"grpc-status", b"0")])
    assert isinstance(wire.take_client()[-1], Trailers)
    assert tables(wire) == (0, 0)
    assert wire.client.active_streams == wire.server.active_streams == 0


def test_a_stream_reset_either_way_leaves_both_tables() -> None:
    wire = Wire()
    ours = open_call(wire, end=False)
    wire.client.reset(ours, H2ErrorCode.CANCEL)  # the proxy cancels upstream
    assert [type(ev) for ev in wire.take_server()] == [StreamReset]
    theirs = open_call(wire)
    wire.server.reset(theirs, H2ErrorCode.INTERNAL_ERROR)  # the upstream resets
    assert [type(ev) for ev in wire.take_client()] == [StreamReset]
    assert tables(wire) == (0, 0)


def test_late_data_on_a_pruned_stream_is_dropped_and_the_connection_goes_on() -> None:
    """The server answers a stream the client already cancelled: the frames are dropped
    as a closed stream's (h2 resets again and counts their window), not a connection
    error, and the next call works."""
    wire = Wire()
    sid = open_call(wire)
    wire.server.send_response(sid, 200)
    wire.take_client()
    wire.client.reset(sid, H2ErrorCode.CANCEL)
    assert wire.client._conn.streams == {}
    body = b"x" * 60000
    assert wire.server.send_data(sid, body) == 0  # crosses the RST_STREAM on the wire
    assert [type(ev) for ev in wire.take_server()] == [StreamReset]
    assert wire.take_client() == []  # dropped, not reported
    nxt = open_call(wire)
    wire.server.send_response(nxt, 200)
    wire.server.send_data(nxt, body, end_stream=True)
    events = wire.take_client()
    assert sum(len(ev.data) for ev in events if isinstance(ev, Data)) == len(body)
    assert tables(wire) == (0, 0)


def test_closed_streams_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """h2 would remember 2**16 closed streams per connection (megabytes on a long-lived
    one); ours keep the most recent few, enough for frames that cross a close."""
    monkeypatch.setattr(http2, "_CLOSED_STREAMS_KEPT", 8)
    wire = Wire()
    sids = []
    for _ in range(20):
        sid = open_call(wire)
        wire.server.send_response(sid, 200, end_stream=True)
        wire.take_client()
        sids.append(sid)
    remembered = wire.client._conn._closed_streams
    assert list(remembered) == sids[-8:]
    assert len(wire.server._conn._closed_streams) == 8
