"""The fuzz promise: any bytes fed to an H2Server (or H2Client), in any split, produce
events of the documented types and never an exception; a connection that reported a
violation or abuse stays closed. And the guard's frame-header scan is split-agnostic: a
valid conversation yields the same events whole or byte by byte."""

from __future__ import annotations

import itertools

from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridmesh.proxy.protocols.http2 import (
    ConnectionAbuse,
    ConnectionTerminated,
    Data,
    Event,
    H2Client,
    H2ErrorCode,
    H2Limits,
    H2Server,
    InformationalResponse,
    ProtocolViolation,
    RequestHeaders,
    ResponseHeaders,
    StreamRefused,
    StreamReset,
    Trailers,
    WindowOpened,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SERVER_EVENTS = (RequestHeaders, Data, Trailers, StreamReset, ConnectionTerminated,
                 WindowOpened, StreamRefused, ConnectionAbuse, ProtocolViolation)
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def feed(side: H2Server | H2Client, data: bytes, cuts: list[int]) -> list[Event]:
    events: list[Event] = []
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in itertools.pairwise(points):
        batch = side.receive_data(data[a:b])
        if side.closed:
            assert side.receive_data(data[b:] or b"x") == []
            return events + batch
        events += batch
    return events


def check(events: list[Event], allowed: tuple[type, ...]) -> None:
    assert all(isinstance(e, allowed) for e in events), events
    final = [i for i, e in enumerate(events) if isinstance(e, ConnectionAbuse | ProtocolViolation)]
    assert final in ([], [len(events) - 1])  # only ever the last event


def frame_bytes() -> st.SearchStrategy[bytes]:
    """Well-formed frame headers with arbitrary types, flags, ids and short payloads: gets
    deeper into h2 than uniform random bytes."""
    return st.builds(
        lambda t, f, s, p: len(p).to_bytes(3, "big") + bytes((t, f)) + s.to_bytes(4, "big") + p,
        st.integers(0, 12), st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]),
        st.binary(max_size=40))


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=6))
def test_random_bytes_to_a_server(data: bytes, cuts: list[int]) -> None:
    check(feed(H2Server(), data, cuts), SERVER_EVENTS)


@FUZZ
@given(st.lists(frame_bytes(), max_size=12), st.lists(st.integers(0, 600), max_size=6))
def test_random_frames_after_a_valid_preface(frames: list[bytes], cuts: list[int]) -> None:
    server = H2Server(H2Limits(max_concurrent_streams=2, max_continuations=2, max_pings=3))
    data = PREFACE + SettingsFrame(0).serialize() + b"".join(frames)
    check(feed(server, data, cuts), SERVER_EVENTS)


@FUZZ
@given(st.lists(frame_bytes(), max_size=12), st.lists(st.integers(0, 600), max_size=6))
def test_random_frames_to_a_client_with_an_open_stream(frames: list[bytes],
                                                       cuts: list[int]) -> None:
    client = H2Client()
    client.send_request(b"GET", b"http", b"a", b"/", end_stream=True)
    data = SettingsFrame(0).serialize() + b"".join(frames)
    allowed = (*SERVER_EVENTS, ResponseHeaders, InformationalResponse)
    check(feed(client, data, cuts), allowed)


def test_a_server_cannot_open_streams_on_our_client() -> None:
    client = H2Client()
    client.send_request(b"GET", b"http", b"a", b"/", end_stream=True)
    block = Encoder().encode([(b":method", b"GET"), (b":scheme", b"http"),
                              (b":authority", b"a"), (b":path", b"/pushed")])
    events = client.receive_data(SettingsFrame(0).serialize() + HeadersFrame(
        2, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    assert events == [ProtocolViolation(
        H2ErrorCode.PROTOCOL_ERROR, "ProtocolError: server-initiated stream 2")]


def conversation() -> bytes:
    """A client's bytes for a few requests with bodies, trailers, resets, pings."""
    client = H2Client()  # fresh: its preface and SETTINGS come first
    one = client.send_request(b"POST", b"http", b"a", b"/1", headers=[(b"x-pad", b"p" * 200)])
    client.send_data(one, b"a" * 40_000)
    client.send_trailers(one, [(b"x-t", b"1")])
    two = client.send_request(b"GET", b"http", b"a", b"/2", end_stream=True)
    client.reset(two)
    client.send_request(b"PUT", b"http", b"a", b"/3", headers=[(b"cookie", b"c" * 30_000)],
                        end_stream=True)
    return client.data_to_send() + PingFrame(0, opaque_data=b"8bytes!!").serialize()


def normalised(events: list[Event]) -> list[Event]:
    """Adjacent Data of one stream merged (how a body splits depends on the reads)."""
    out: list[Event] = []
    for e in events:
        last = out[-1] if out else None
        if isinstance(e, Data) and isinstance(last, Data) and last.stream_id == e.stream_id:
            out[-1] = Data(e.stream_id, last.data + e.data,
                           last.flow_controlled_length + e.flow_controlled_length, e.end_stream)
        else:
            out.append(e)
    return out


CONVERSATION = conversation()
WHOLE = normalised(H2Server().receive_data(CONVERSATION))


def test_the_conversation_is_interesting() -> None:
    kinds = [type(e).__name__ for e in WHOLE]
    assert kinds == ["RequestHeaders", "Data", "Trailers", "RequestHeaders", "StreamReset",
                     "RequestHeaders"]


def test_bytewise_feeding_gives_the_same_events() -> None:
    server = H2Server()
    events = [e for i in range(len(CONVERSATION))
              for e in server.receive_data(CONVERSATION[i : i + 1])]
    assert normalised(events) == WHOLE


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, len(CONVERSATION)), max_size=20))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert normalised(feed(H2Server(), CONVERSATION, cuts)) == WHOLE


def test_the_frames_used_by_the_strategies_serialise() -> None:
    # Guards the imports above against hyperframe API drift (they document the shapes).
    for frame in (DataFrame(1, b"x"), HeadersFrame(1, b""), ContinuationFrame(1, b""),
                  RstStreamFrame(1), WindowUpdateFrame(0, window_increment=1)):
        assert len(frame.serialize()) >= 9
