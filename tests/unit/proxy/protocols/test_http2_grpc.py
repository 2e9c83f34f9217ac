"""gRPC over the HTTP/2 cores, shaped like real gRPC (POST, te: trailers, length-prefixed
messages, status in trailers), and the helpers: detection, status, deadlines, errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_http2_wire import Wire

from hybridmesh.proxy.protocols.grpc import (
    GrpcFramingError,
    GrpcStatus,
    InvalidGrpcTimeout,
    Message,
    MessageReader,
    call_status,
    decode_message,
    encode_message,
    format_grpc_timeout,
    is_grpc,
    parse_grpc_timeout,
    status_from_http,
    trailers_only,
)
from hybridmesh.proxy.protocols.http2 import (
    Data,
    Event,
    RequestHeaders,
    ResponseHeaders,
    Trailers,
)

GRPC_REQUEST = [
    (b"content-type", b"application/grpc+proto"), (b"te", b"trailers"),
    (b"grpc-timeout", b"250m"), (b"grpc-accept-encoding", b"identity,gzip"),
    (b"user-agent", b"grpc-python/1.60"),
]


def data_of(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data))


def test_unary_call() -> None:
    wire = Wire()
    sid = wire.client.send_request(b"POST", b"http", b"greeter.ns:50051",
                                   b"/helloworld.Greeter/SayHello", headers=GRPC_REQUEST)
    wire.client.send_data(sid, encode_message(b"\x0a\x05world"), end_stream=True)
    events = wire.take_server()
    head = events[0]
    assert isinstance(head, RequestHeaders) and is_grpc(head.headers)
    assert parse_grpc_timeout(dict(head.headers)[b"grpc-timeout"]) == pytest.approx(0.25)
    assert decode_message(data_of(events)) == Message(b"\x0a\x05world")

    wire.server.send_response(sid, 200, [(b"content-type", b"application/grpc+proto")])
    wire.server.send_data(sid, encode_message(b"\x0a\x0bhello world"))
    wire.server.send_trailers(sid, [(b"grpc-status", b"0"), (b"grpc-message", b"")])
    events = wire.take_client()
    response, trailers = events[0], events[-1]
    assert isinstance(response, ResponseHeaders) and isinstance(trailers, Trailers)
    assert decode_message(data_of(events)).payload == b"\x0a\x0bhello world"
    assert call_status(response.headers, trailers.headers) == (GrpcStatus.OK, "")


def test_server_streaming_call_across_flow_control() -> None:
    wire = Wire()
    sid = wire.client.send_request(b"POST", b"http", b"feed.ns:50051", b"/feed.Feed/Watch",
                                   headers=GRPC_REQUEST)
    wire.client.send_data(sid, encode_message(b"topic"), end_stream=True)
    wire.take_server()
    wire.server.send_response(sid, 200, [(b"content-type", b"application/grpc")])
    updates = [b"update-%03d:" % i + b"." * 5000 for i in range(200)]  # 1 MB: > windows
    for update in updates:
        wire.server.send_data(sid, encode_message(update))
    wire.server.send_trailers(sid, [(b"grpc-status", b"0")])
    reader = MessageReader()
    messages: list[Message] = []
    trailers = None
    for _ in range(1000):
        events = wire.take_client()
        for event in events:
            if isinstance(event, Data):
                messages += reader.feed(event.data)  # any split of the bytes works
                wire.client.acknowledge_received(sid, event.flow_controlled_length)
            elif isinstance(event, Trailers):
                trailers = event.headers
        if trailers is not None:
            break
    assert [m.payload for m in messages] == updates
    assert trailers is not None and call_status((), trailers) == (0, "")
    assert wire.server.active_streams == 0


def test_trailers_only_error_from_the_proxy() -> None:
    wire = Wire()
    sid = wire.client.send_request(b"POST", b"http", b"a:1", b"/pkg.Svc/M",
                                   headers=GRPC_REQUEST)
    wire.take_server()
    fields = trailers_only(GrpcStatus.UNAVAILABLE, "no endpoint for a.ns:1 — 100% down",
                           extra=((b"hm-proxy-error", b"no-endpoints"),))
    wire.server.send_response(sid, 200, fields, end_stream=True)
    [response] = wire.take_client()
    assert isinstance(response, ResponseHeaders) and response.end_stream
    assert dict(response.headers)[b"grpc-message"] == (
        b"no endpoint for a.ns:1 %E2%80%94 100%25 down")
    assert call_status(response.headers) == (14, "no endpoint for a.ns:1 — 100% down")
    assert dict(response.headers)[b"hm-proxy-error"] == b"no-endpoints"


@pytest.mark.parametrize(("value", "grpc"), [
    (b"application/grpc", True), (b"application/grpc+proto", True),
    (b"Application/GRPC;charset=utf-8", True), (b"application/grpc-web", False),
    (b"application/grpc-web+proto", False), (b"application/json", False),
])
def test_detection(value: bytes, grpc: bool) -> None:
    assert is_grpc(((b"te", b"trailers"), (b"content-type", value))) is grpc
    assert not is_grpc(())


def test_status_reading() -> None:
    assert call_status(((b"content-type", b"application/grpc"),)) is None
    assert call_status((), ((b"grpc-status", b"x"),)) == (GrpcStatus.UNKNOWN, "")
    assert call_status(((b"grpc-status", b"4"),), ((b"grpc-status", b"0"),)) == (0, "")
    assert call_status((), ((b"grpc-message", b"bad %zz %41"), (b"grpc-status", b"3"))) == (
        3, "bad %zz A")
    assert [status_from_http(s) for s in (400, 401, 403, 404, 429, 502, 503, 504, 500)] == [
        13, 16, 7, 12, 14, 14, 14, 14, 2]


@pytest.mark.parametrize(("value", "seconds"), [
    (b"1H", 3600.0), (b"2M", 120.0), (b"3S", 3.0), (b"250m", 0.25), (b"7u", 7e-6),
    (b"99999999n", 0.099999999),
])
def test_timeout_parsing(value: bytes, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"1", b"S", b"123456789S", b"1s", b"-1S", b"1.5S"])
def test_malformed_timeouts(value: bytes) -> None:
    with pytest.raises(InvalidGrpcTimeout):
        parse_grpc_timeout(value)


@given(st.floats(min_value=1e-9, max_value=1e9))
def test_formatted_timeouts_parse_back_never_shorter(seconds: float) -> None:
    value = format_grpc_timeout(seconds)
    back = parse_grpc_timeout(value)
    assert back >= seconds * (1 - 1e-9)
    assert back <= seconds * 1.01 + 1e-9  # the finest unit that fits: within 1 %


def test_format_refuses_what_cannot_be_a_timeout() -> None:
    for bad in (0.0, -1.0, float("inf"), float("nan"), 1e12):
        with pytest.raises(InvalidGrpcTimeout):
            format_grpc_timeout(bad)


def test_message_reader_limits_and_flags() -> None:
    reader = MessageReader(max_message_size=10)
    framed = encode_message(b"abc", compressed=True) + encode_message(b"")
    assert [m for i in range(len(framed)) for m in reader.feed(framed[i : i + 1])] == [
        Message(b"abc", True), Message(b"")]
    with pytest.raises(GrpcFramingError):
        reader.feed(b"\x00\x00\x00\x00\x0b")  # 11 bytes announced: refused before buffering
    with pytest.raises(GrpcFramingError):
        MessageReader().feed(b"\x02\x00\x00\x00\x00")
    with pytest.raises(GrpcFramingError):
        decode_message(encode_message(b"a") + b"\x00")
