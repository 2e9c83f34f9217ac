"""The abuse guards: each attack trips a typed event and a GOAWAY before the damage (work
for the backend, or memory in h2) exceeds its threshold; legitimate traffic near the
thresholds does not trip them."""

from __future__ import annotations

import struct

import pytest
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
)
from test_http2_wire import Wire

from hybridmesh.proxy.protocols.http2 import (
    AbuseKind,
    ConnectionAbuse,
    ConnectionTerminated,
    Data,
    Event,
    H2ErrorCode,
    H2Limits,
    H2Server,
    ProtocolViolation,
    RequestHeaders,
    StreamRefused,
    StreamReset,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()
REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Spy:
    """Counts the bytes the server's h2 connection is fed."""

    def __init__(self, server: H2Server, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fed = 0
        real = server._conn.receive_data

        def receive(data: bytes) -> object:
            self.fed += len(data)
            return real(data)

        monkeypatch.setattr(server._conn, "receive_data", receive)


def goaway_in(data: bytes) -> tuple[int, int]:
    """(error code, last stream id) of the GOAWAY frame that ends ``data``."""
    at = data.rfind(b"\x07\x00\x00\x00\x00\x00")  # type GOAWAY, flags 0, stream 0
    assert at >= 3, "no GOAWAY"
    last, code = struct.unpack_from(">LL", data, at + 6)
    return code, last


def kinds(events: list[Event]) -> list[AbuseKind]:
    return [e.kind for e in events if isinstance(e, ConnectionAbuse)]


# ------------------------------------------------------------------------ rapid reset

def test_rapid_reset_in_one_read_is_cut_at_the_threshold() -> None:
    wire = Wire()
    for i in range(1000):
        sid = wire.client.send_request(b"GET", b"http", b"a", b"/%d" % i, end_stream=True)
        wire.client.reset(sid)
    attack = wire.client.data_to_send()
    events = wire.server.receive_data(attack)
    requests = [e for e in events if isinstance(e, RequestHeaders)]
    resets = [e for e in events if isinstance(e, StreamReset)]
    assert (len(requests), len(resets)) == (101, 100)  # 100 tolerated, the 101st trips
    assert events[-1] == ConnectionAbuse(AbuseKind.RAPID_RESET,
                                         "more than 100 resets in 10 s")
    assert wire.server.closed
    out = wire.server.data_to_send()
    assert goaway_in(out) == (H2ErrorCode.ENHANCE_YOUR_CALM, requests[-1].stream_id)
    assert wire.server.receive_data(attack) == []  # nothing more is processed
    assert ConnectionTerminated(H2ErrorCode.ENHANCE_YOUR_CALM, requests[-1].stream_id,
                                b"rapid-reset") in wire.client.receive_data(out)


def test_slow_resets_of_most_streams_trip_the_ratio_after_200_streams() -> None:
    clock = FakeClock()
    wire = Wire(clock=clock)
    tripped = []
    for opened in range(1, 400):
        clock.now += 0.2  # 5 resets/s: under the rate limit
        sid = wire.client.send_request(b"GET", b"http", b"a", b"/", end_stream=True)
        wire.take_server()
        wire.client.reset(sid)
        if kinds(events := wire.take_server()):
            tripped = [(opened, events[-1])]
            break
    assert tripped == [(200, ConnectionAbuse(AbuseKind.RAPID_RESET,
                                              "200 of 200 streams reset before completion"))]


def test_cancelling_finished_streams_never_counts() -> None:
    wire = Wire()  # real clock: 1000 resets within well under 10 s
    for _ in range(1000):
        sid = wire.client.send_request(b"POST", b"http", b"a", b"/")
        wire.take_server()
        wire.server.send_response(sid, 200, end_stream=True)  # the server is done
        wire.pump()
        wire.client.reset(sid)  # e.g. a client abandoning an upload it no longer needs
        assert kinds(wire.take_server()) == []
    assert not wire.server.closed


def test_resets_spread_over_time_with_completed_traffic_are_tolerated() -> None:
    clock = FakeClock()
    wire = Wire(clock=clock)
    for i in range(1000):
        clock.now += 0.15  # ~6.7 resets/s at most: under 100 per 10 s
        sid = wire.client.send_request(b"GET", b"http", b"a", b"/", end_stream=True)
        wire.take_server()
        if i % 3:
            wire.server.send_response(sid, 200, end_stream=True)
            wire.pump()
        else:
            wire.client.reset(sid)  # a third abandoned: under the ratio
        assert kinds(wire.take_server()) == []


# --------------------------------------------------------------- CONTINUATION floods

def continuation_attack(frames: int, payload: bytes) -> bytes:
    head = HeadersFrame(1, data=Encoder().encode(REQUEST)[:3])  # no END_HEADERS
    return PREFACE + head.serialize() + ContinuationFrame(1, data=payload).serialize() * frames


def test_continuation_flood_is_cut_before_h2_buffers_more_than_the_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    server = H2Server()
    spy = Spy(server, monkeypatch)
    attack = continuation_attack(10_000, b"\x00" * 4000)  # 40 MB of header block
    events: list[Event] = []
    for at in range(0, len(attack), 16 * 1024):
        events += server.receive_data(attack[at : at + 16 * 1024])
    assert kinds(events) == [AbuseKind.CONTINUATION_FLOOD]
    cap = server.limits.max_header_block
    assert spy.fed <= len(PREFACE) + cap + 9 * 17 + 9  # frame headers of what fit
    assert goaway_in(server.data_to_send())[0] == H2ErrorCode.ENHANCE_YOUR_CALM


def test_empty_continuation_frames_are_capped_by_count(monkeypatch: pytest.MonkeyPatch) -> None:
    server = H2Server()
    spy = Spy(server, monkeypatch)
    events = server.receive_data(continuation_attack(100_000, b""))
    assert kinds(events) == [AbuseKind.CONTINUATION_FLOOD]
    assert spy.fed <= len(PREFACE) + 9 + 3 + 9 * server.limits.max_continuations


def test_a_large_legitimate_header_block_passes() -> None:
    wire = Wire()
    cookie = [(b"cookie", b"c%d=%s" % (i, b"v" * 1000)) for i in range(40)]  # ~40 KiB
    wire.client.send_request(b"GET", b"http", b"a", b"/", headers=cookie, end_stream=True)
    [head] = wire.take_server()
    assert isinstance(head, RequestHeaders) and len(head.headers[0][1]) > 40_000


def test_hpack_bomb_is_refused_as_abuse() -> None:
    wire = Wire()
    big = [(b"x-big", b"v" * 4000)] * 17  # tiny on the wire (indexed), 68 KB decoded
    wire.client.send_request(b"GET", b"http", b"a", b"/", headers=big, end_stream=True)
    events = wire.take_server()
    assert kinds(events) == [AbuseKind.HEADER_LIST_TOO_LARGE]
    assert wire.server.closed


# --------------------------------------------------- frames, pings, settings, streams

def test_an_oversized_frame_is_refused_on_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    server = H2Server()
    spy = Spy(server, monkeypatch)
    head = struct.pack(">BHBBL", 0x10, 0, 0, 0, 1)  # DATA of 1 MiB on stream 1
    events = server.receive_data(PREFACE + head + b"\x00" * 1000)
    assert events == [ProtocolViolation(
        H2ErrorCode.FRAME_SIZE_ERROR,
        "frame of 1048576 bytes exceeds SETTINGS_MAX_FRAME_SIZE 16384")]
    assert spy.fed == len(PREFACE)
    assert goaway_in(server.data_to_send())[0] == H2ErrorCode.FRAME_SIZE_ERROR


@pytest.mark.parametrize(("frame", "kind"), [
    (PingFrame(0, opaque_data=b"12345678"), AbuseKind.PING_FLOOD),
    (SettingsFrame(0), AbuseKind.SETTINGS_FLOOD),
])
def test_control_frame_floods_trip_and_bound_the_replies(frame: object,
                                                        kind: AbuseKind) -> None:
    server = H2Server()
    server.data_to_send()
    events = server.receive_data(PREFACE + frame.serialize() * 10_000)  # type: ignore[attr-defined]
    assert kinds(events) == [kind]
    replies = server.data_to_send()
    assert len(replies) < 101 * 17 + 200  # at most the tolerated ACKs and a GOAWAY


def test_pings_at_a_keepalive_rate_are_fine() -> None:
    clock = FakeClock()
    server = H2Server(clock=clock)
    server.receive_data(PREFACE)
    for _ in range(500):
        clock.now += 0.5  # 20 per 10 s
        assert server.receive_data(PingFrame(0, opaque_data=b"k" * 8).serialize()) == []
    assert not server.closed


def test_a_client_ignoring_max_concurrent_streams_gets_refusals_not_a_dead_connection() -> None:
    server = H2Server(H2Limits(max_concurrent_streams=10))
    encoder = Encoder()
    attack = PREFACE + b"".join(
        HeadersFrame(sid, data=encoder.encode(REQUEST), flags=["END_HEADERS"]).serialize()
        for sid in range(1, 60, 2))
    events = server.receive_data(attack)
    assert [type(e) for e in events] == [RequestHeaders] * 10 + [StreamRefused] * 20
    assert not server.closed
    server.reset(1)  # frees a slot
    server.data_to_send()
    events = server.receive_data(
        HeadersFrame(61, data=encoder.encode(REQUEST), flags=["END_HEADERS"]).serialize()
        + DataFrame(3, data=b"after").serialize())
    assert [type(e) for e in events] == [RequestHeaders, Data]
    assert events[1] == Data(3, b"after", 5, False)
    assert isinstance(events[0], RequestHeaders) and events[0].stream_id == 61


def test_garbage_after_the_preface_is_a_violation_with_goaway() -> None:
    server = H2Server()
    events = server.receive_data(PREFACE + GoAwayFrame(0).serialize())
    assert events == [ConnectionTerminated(H2ErrorCode.NO_ERROR, 0, b"")]
    events = server.receive_data(b"\x00\x00\x00\x09\x00\x00\x00\x00\x01")  # naked CONTINUATION
    assert [type(e) for e in events] == [ProtocolViolation]
    assert isinstance(events[0], ProtocolViolation)
    assert events[0].code == H2ErrorCode.PROTOCOL_ERROR
