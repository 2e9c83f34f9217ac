"""Client↔server exchanges through the real cores: heads, bodies, trailers, many streams,
flow control as backpressure, resets, interim responses and GOAWAY (graceful and not)."""

from __future__ import annotations

import pytest
from test_http2_wire import Wire

from hybridmesh.proxy.protocols.http2 import (
    ConnectionTerminated,
    Data,
    Event,
    H2Client,
    H2ErrorCode,
    H2Limits,
    H2Server,
    InformationalResponse,
    LocalProtocolError,
    RequestHeaders,
    ResponseHeaders,
    StreamRefused,
    StreamReset,
    Trailers,
    WindowOpened,
)


def body_of(events: list[Event], stream_id: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data) and e.stream_id == stream_id)


def ack_all(side: H2Client | H2Server, events: list[Event]) -> None:
    for e in events:
        if isinstance(e, Data):
            side.acknowledge_received(e.stream_id, e.flow_controlled_length)


def test_request_and_response_with_bodies_and_trailers() -> None:
    wire = Wire()
    sid = wire.client.send_request(
        b"POST", b"https", b"shop.ns:8443", b"/cart?id=7",
        headers=[(b"content-type", b"text/plain"), (b"te", b"trailers"), (b"x-a", b"1")])
    assert wire.client.send_data(sid, b"hello ") == 0
    wire.client.send_data(sid, b"world")
    wire.client.send_trailers(sid, [(b"x-checksum", b"abc")])
    events = wire.take_server()
    assert events[0] == RequestHeaders(
        sid, b"POST", b"https", b"shop.ns:8443", b"/cart?id=7",
        ((b"content-type", b"text/plain"), (b"te", b"trailers"), (b"x-a", b"1")), False)
    assert body_of(events, sid) == b"hello world"
    assert events[-1] == Trailers(sid, ((b"x-checksum", b"abc"),))

    wire.server.send_response(sid, 201, [(b"content-type", b"text/plain")])
    wire.server.send_data(sid, b"made")
    wire.server.send_trailers(sid, [(b"grpc-status", b"0")])
    events = wire.take_client()
    assert events[0] == ResponseHeaders(sid, 201, ((b"content-type", b"text/plain"),), False)
    assert body_of(events, sid) == b"made"
    assert events[-1] == Trailers(sid, ((b"grpc-status", b"0"),))
    assert wire.client.active_streams == wire.server.active_streams == 0


def test_heads_that_end_the_stream_and_an_empty_final_data_frame() -> None:
    wire = Wire()
    sid = wire.client.send_request(b"GET", b"http", b"a", b"/", end_stream=True)
    [head] = wire.take_server()
    assert isinstance(head, RequestHeaders) and head.end_stream
    wire.server.send_response(sid, 200)
    wire.server.send_data(sid, b"", end_stream=True)
    events = wire.take_client()
    assert events == [ResponseHeaders(sid, 200, (), False), Data(sid, b"", 0, True)]
    assert wire.server.active_streams == 0


def test_hundred_concurrent_streams_answered_in_reverse_keep_their_bodies() -> None:
    wire = Wire()
    sids = [wire.client.send_request(b"POST", b"http", b"a", b"/%d" % i) for i in range(100)]
    assert not wire.client.can_open_stream()  # the server's limit: 100
    for sid in sids:
        wire.client.send_data(sid, b"q%d" % sid, end_stream=True)
    events = wire.take_server()
    assert [e.stream_id for e in events if isinstance(e, RequestHeaders)] == sids
    for sid in reversed(sids):
        assert body_of(events, sid) == b"q%d" % sid
        wire.server.send_response(sid, 200)
        wire.server.send_data(sid, b"r%d" % sid * 50, end_stream=True)
    events = wire.take_client()
    assert [e.stream_id for e in events if isinstance(e, ResponseHeaders)] == sids[::-1]
    assert all(body_of(events, sid) == b"r%d" % sid * 50 for sid in sids)
    assert wire.client.active_streams == 0 and wire.client.can_open_stream()


def test_a_large_body_crosses_the_windows_only_as_the_receiver_acknowledges() -> None:
    window = 16 * 1024
    wire = Wire(server=H2Limits(stream_window=window, connection_window=65535))
    sid = wire.client.send_request(b"PUT", b"http", b"a", b"/blob")
    blob = bytes(range(256)) * 1024  # 256 KiB
    queued = wire.client.send_data(sid, blob, end_stream=True)
    assert queued == len(blob) - window
    assert wire.client.queued(sid) == queued and wire.client.send_window(sid) == 0

    received: list[Event] = []
    events = wire.take_server()
    for _ in range(100):
        chunk = body_of(events, sid)
        assert 0 < len(chunk) <= window  # never more than one window ahead of the acks
        received += events
        if any(isinstance(e, Data) and e.end_stream for e in events):
            break
        assert wire.take_server() == []  # nothing moves without an acknowledgement
        ack_all(wire.server, events)
        events = wire.take_server()
    assert body_of(received, sid) == blob
    assert WindowOpened(sid) in wire.take_client()
    assert wire.client.queued(sid) == 0


def test_acknowledging_data_of_a_reset_stream_still_reopens_the_connection() -> None:
    wire = Wire(server=H2Limits(stream_window=65535, connection_window=65535))
    first = wire.client.send_request(b"PUT", b"http", b"a", b"/1")
    wire.client.send_data(first, b"x" * 65535)
    events = wire.take_server()
    wire.client.reset(first)
    assert wire.take_server() == [StreamReset(first, H2ErrorCode.CANCEL, True)]
    ack_all(wire.server, events)  # the connection window is shared
    wire.pump()
    second = wire.client.send_request(b"PUT", b"http", b"a", b"/2")
    assert wire.client.send_data(second, b"y" * 1000, end_stream=True) == 0
    assert body_of(wire.take_server(), second) == b"y" * 1000


def test_resets_in_both_directions_and_writes_after_them_are_dropped() -> None:
    wire = Wire()
    sid = wire.client.send_request(b"GET", b"http", b"a", b"/", end_stream=True)
    wire.take_server()
    wire.server.reset(sid, H2ErrorCode.REFUSED_STREAM)
    assert wire.take_client() == [StreamReset(sid, H2ErrorCode.REFUSED_STREAM, True)]
    wire.server.send_response(sid, 200, end_stream=True)  # crossed the reset: dropped
    assert wire.take_client() == []

    other = wire.client.send_request(b"POST", b"http", b"a", b"/")
    wire.take_server()
    wire.client.reset(other)
    assert wire.take_server() == [StreamReset(other, H2ErrorCode.CANCEL, True)]
    assert wire.client.send_data(other, b"late") == 0
    assert wire.server.active_streams == wire.client.active_streams == 0


def test_interim_response_then_final() -> None:
    wire = Wire()
    sid = wire.client.send_request(b"POST", b"http", b"a", b"/",
                                   headers=[(b"expect", b"100-continue")])
    wire.take_server()
    wire.server.send_informational(sid, 100)
    assert wire.take_client() == [InformationalResponse(sid, 100, ())]
    with pytest.raises(LocalProtocolError):
        wire.server.send_informational(sid, 101)
    wire.server.send_response(sid, 204, end_stream=True)
    assert wire.take_client() == [ResponseHeaders(sid, 204, (), True)]


@pytest.mark.parametrize("field", [
    (b"Content-Type", b"x"), (b"connection", b"close"), (b"te", b"gzip"),
    (b"x-a", b"v\r\nx-b: injected"), (b"x-a", b" padded"), (b"bad name", b"v"),
])
def test_invalid_fields_are_our_bug_not_sent(field: tuple[bytes, bytes]) -> None:
    wire = Wire()
    with pytest.raises(LocalProtocolError):
        wire.client.send_request(b"GET", b"http", b"a", b"/", headers=[field])
    sid = wire.client.send_request(b"GET", b"http", b"a", b"/", end_stream=True)
    wire.take_server()
    with pytest.raises(LocalProtocolError):
        wire.server.send_response(sid, 200, [field])
    with pytest.raises(LocalProtocolError):
        wire.server.send_data(sid + 2, b"never opened")


def test_generic_send_headers_opens_client_streams_and_answers() -> None:
    wire = Wire()
    sid = wire.client._conn.get_next_available_stream_id()
    wire.client.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"),
                                   (b":authority", b"a"), (b":path", b"/g")], end_stream=True)
    [head] = wire.take_server()
    assert isinstance(head, RequestHeaders) and head.path == b"/g"
    wire.server.send_headers(sid, [(b":status", b"103"), (b"link", b"</a>")])
    wire.server.send_headers(sid, [(b":status", b"200"), (b"x-r", b"1")])
    wire.server.send_headers(sid, [(b"x-trailer", b"t")], end_stream=True)
    assert wire.take_client() == [InformationalResponse(sid, 103, ((b"link", b"</a>"),)),
                                  ResponseHeaders(sid, 200, ((b"x-r", b"1"),), False),
                                  Trailers(sid, ((b"x-trailer", b"t"),))]


@pytest.mark.parametrize("head", [
    [(b"x-a", b"no status")], [(b":status", b"200"), (b":status", b"204")],
    [(b":status", b"20")], [(b":path", b"/")], [(b":status", b"200"), (b"x", b"1"),
                                                 (b":late", b"x")],
])
def test_generic_heads_are_checked(head: list[tuple[bytes, bytes]]) -> None:
    wire = Wire()
    sid = wire.client.send_request(b"GET", b"http", b"a", b"/", end_stream=True)
    wire.take_server()
    with pytest.raises(LocalProtocolError):
        wire.server.send_headers(sid, head)
    with pytest.raises(LocalProtocolError):
        wire.client.send_headers(sid + 2, [(b":path", b"/no-method"), (b":scheme", b"http")])


def test_graceful_goaway_lets_inflight_streams_finish_and_refuses_new_ones() -> None:
    wire = Wire()
    inflight = wire.client.send_request(b"POST", b"http", b"a", b"/upload")
    wire.take_server()
    late = wire.client.send_request(b"GET", b"http", b"a", b"/late", end_stream=True)
    wire.server.goaway()  # before the late request arrives: last_stream_id = inflight
    events = wire.take_client()
    assert ConnectionTerminated(H2ErrorCode.NO_ERROR, inflight, b"") in events
    assert StreamReset(late, H2ErrorCode.REFUSED_STREAM, True) in events
    assert wire.take_server() == [StreamRefused(late, "draining")]
    assert not wire.client.can_open_stream()

    wire.client.send_data(inflight, b"rest of body", end_stream=True)  # both directions work
    assert body_of(wire.take_server(), inflight) == b"rest of body"
    wire.server.send_response(inflight, 200, end_stream=True)
    assert wire.take_client() == [ResponseHeaders(inflight, 200, (), True)]
    assert wire.server.active_streams == 0 and not wire.server.closed


def test_error_goaway_closes_and_refuses_the_client_streams_it_excludes() -> None:
    wire = Wire()
    kept = wire.client.send_request(b"GET", b"http", b"a", b"/1", end_stream=True)
    wire.take_server()
    lost = wire.client.send_request(b"GET", b"http", b"a", b"/2", end_stream=True)
    wire.server.goaway(H2ErrorCode.INTERNAL_ERROR, b"bye", last_stream_id=kept)
    assert wire.server.closed
    assert wire.take_client() == [
        ConnectionTerminated(H2ErrorCode.INTERNAL_ERROR, kept, b"bye"),
        StreamReset(lost, H2ErrorCode.REFUSED_STREAM, True),
    ]
    assert wire.take_server() == []  # a closed server ignores input


def test_streams_opened_before_the_servers_settings_are_refused_beyond_its_limit() -> None:
    client, server = H2Client(), H2Server(H2Limits(max_concurrent_streams=2))
    heavy = [(b"x-trace", b"t" * 40), (b"user-agent", b"ua/1")]  # HPACK-indexed fields
    sids = [client.send_request(b"GET", b"http", b"a", b"/%d" % i, headers=heavy,
                                end_stream=True)
            for i in range(3)]  # the client does not know the limit yet
    server.receive_data(b"")
    events = server.receive_data(client.data_to_send())
    assert [type(e) for e in events] == [RequestHeaders, RequestHeaders, StreamRefused]
    assert events[2] == StreamRefused(sids[2], "max-concurrent-streams")
    client_events = client.receive_data(server.data_to_send())
    assert StreamReset(sids[2], H2ErrorCode.REFUSED_STREAM, True) in client_events

    server.send_response(sids[0], 200, end_stream=True)  # frees a slot
    client.receive_data(server.data_to_send())
    again = client.send_request(b"GET", b"http", b"a", b"/again", headers=heavy)
    [retry] = server.receive_data(client.data_to_send())
    assert isinstance(retry, RequestHeaders)  # HPACK survived the refused block
    assert (retry.stream_id, retry.path, retry.headers) == (again, b"/again", tuple(heavy))


def test_send_misuse_is_a_local_error_and_empty_data_sends_nothing() -> None:
    wire = Wire(server=H2Limits(stream_window=100))
    sid = wire.client.send_request(b"POST", b"http", b"a", b"/")
    wire.take_server()
    with pytest.raises(LocalProtocolError):
        wire.server.send_data(sid, b"body before the head")
    assert wire.client.send_data(sid, b"") == 0
    assert wire.client.data_to_send() == b""  # no empty DATA frame
    assert wire.client.send_data(sid, b"x" * 150, end_stream=True) == 50
    with pytest.raises(LocalProtocolError):
        wire.client.send_data(sid, b"more")
    with pytest.raises(LocalProtocolError):
        wire.client.send_trailers(sid, [(b"x-t", b"1")])
    wire.server.send_response(sid, 200, end_stream=True)  # the request is still open
    with pytest.raises(LocalProtocolError):
        wire.server.send_data(sid, b"after our own end")
