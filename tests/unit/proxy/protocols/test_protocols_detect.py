"""Protocol detection: each protocol, ambiguous prefixes, the timer, and the promise that a
decision never changes with more bytes (the pattern table is prefix-free)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.proxy.protocols.detect import (
    _PATTERNS,
    HTTP1_METHODS,
    HTTP2_PREFACE,
    MAX_DETECT_BYTES,
    Detector,
    Protocol,
    detect,
    http2_server_preface,
)
from hybridmesh.proxy.protocols.errors import LocalProtocolError

P = Protocol
CLIENT_HELLO = bytes.fromhex("16030100f8010000f40303") + bytes(32)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (CLIENT_HELLO, P.TLS),
        (b"\x16\x03\x00\x00\x10\x01", P.TLS),  # SSL 3.0 record version
        (b"\x16\x03\x04\x00\x10\x01", P.TLS),
        (b"\x16\x03\x05\x00\x10\x01", P.OPAQUE),  # no such record version
        (b"\x16\x03\x01\x00\x10\x02", P.OPAQUE),  # ServerHello: not what a client sends
        (b"\x17\x03\x03\x00\x10", P.OPAQUE),  # application data record
        (HTTP2_PREFACE, P.HTTP2),
        (HTTP2_PREFACE + b"\x00\x00\x12\x04", P.HTTP2),
        (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", P.OPAQUE),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", P.HTTP1),
        (b"GET /", P.HTTP1),
        (b"OPTIONS *", P.HTTP1),
        (b"CONNECT db:5432 HTTP/1.1", P.HTTP1),
        (b"PATCH /x", P.HTTP1),
        (b"get / HTTP/1.1", P.OPAQUE),  # methods are case-sensitive
        (b"GETX / HTTP/1.1", P.OPAQUE),
        (b"GET  / HTTP/1.1", P.OPAQUE),
        (b"PURGE / HTTP/1.1", P.OPAQUE),  # not a known method: opaque is the safe side
        (b"SSH-2.0-OpenSSH_9.2\r\n", P.OPAQUE),
        (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", P.OPAQUE),  # postgres SSLRequest
        (b"*1\r\n$4\r\nPING\r\n", P.OPAQUE),  # redis
        (b"", P.NEED_MORE),
        (b"P", P.NEED_MORE),
        (b"PR", P.NEED_MORE),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r", P.NEED_MORE),
        (b"GE", P.NEED_MORE),
        (b"GET", P.NEED_MORE),
        (b"GET ", P.NEED_MORE),
        (b"\x16\x03\x01\x00", P.NEED_MORE),
    ],
)
def test_detect(data: bytes, expected: Protocol) -> None:
    assert detect(data).protocol is expected


def test_every_known_method_is_http1() -> None:
    for method in HTTP1_METHODS:
        assert detect(method + b" /").protocol is P.HTTP1
        for cut in range(1, len(method) + 2):  # every proper prefix of "METHOD /"
            assert detect((method + b" ")[:cut]).protocol is P.NEED_MORE


def test_at_most_24_bytes_are_examined() -> None:
    assert MAX_DETECT_BYTES == 24 == max(len(p) for _, _, p in _PATTERNS)
    assert detect(HTTP2_PREFACE + b"garbage" * 1000).protocol is P.HTTP2
    assert detect(b"A" * MAX_DETECT_BYTES + b"GET /").protocol is P.OPAQUE


def test_patterns_are_prefix_free() -> None:
    """No string matching one pattern is a prefix of a string matching another."""
    for (_, _, a), (_, _, b) in itertools.permutations(_PATTERNS, 2):
        overlap = all(set(x) & set(y) for x, y in zip(a, b, strict=False))
        assert not overlap, (a, b)


@given(data=st.binary(max_size=40), cut=st.integers(0, 40))
def test_decisions_never_change_with_more_bytes(data: bytes, cut: int) -> None:
    early = detect(data[:cut])
    if early.decided:
        assert detect(data) == early
    if len(data) >= MAX_DETECT_BYTES:
        assert detect(data).decided


@given(data=st.binary(max_size=40), cuts=st.lists(st.integers(0, 40), max_size=5))
def test_detector_matches_detect_whatever_the_reads(data: bytes, cuts: list[int]) -> None:
    detector = Detector()
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    result = None
    for a, b in itertools.pairwise(bounds):
        result = detector.feed(data[a:b])
        if result.decided:
            break
    final = detector.timeout()
    expected = detect(data)
    assert final.protocol is (expected.protocol if expected.decided else P.OPAQUE)
    if result is not None and result.decided:
        assert detector.buffered == data[: len(detector.buffered)]


def test_detector_timeout_and_eof_make_it_opaque() -> None:
    server_first = Detector()
    assert server_first.result is None
    decision = server_first.timeout()
    assert decision.protocol is P.OPAQUE and "window" in decision.detail
    assert server_first.timeout() is decision

    short = Detector()
    assert short.feed(b"GE").protocol is P.NEED_MORE
    assert short.eof().protocol is P.OPAQUE
    assert short.buffered == b"GE"


def test_detector_keeps_bytes_and_refuses_feeding_after_decision() -> None:
    detector = Detector()
    assert detector.feed(b"\x16\x03").protocol is P.NEED_MORE
    assert detector.feed(b"\x01\x00\xf8\x01rest").protocol is P.TLS
    assert detector.buffered == b"\x16\x03\x01\x00\xf8\x01rest"
    assert detector.timeout().protocol is P.TLS  # a late timer does not override
    with pytest.raises(LocalProtocolError):
        detector.feed(b"more")


# -- an upstream that speaks first: HTTP/2 server preface or a server-first banner ----------


def _settings_frame(n_settings: int, *, flags: int = 0, stream: int = 0) -> bytes:
    payload = b"".join(i.to_bytes(2, "big") + (i * 7).to_bytes(4, "big")
                       for i in range(1, n_settings + 1))
    return (len(payload).to_bytes(3, "big") + bytes([0x4, flags])
            + stream.to_bytes(4, "big") + payload)


def test_h2_servers_preface_is_recognized() -> None:
    from hybridmesh.proxy.protocols.http2 import H2Server

    ours = H2Server().data_to_send()  # what the proxy's own h2 server side sends on accept
    grpcio = bytes.fromhex("000018040000000000000400400000000500400000000600004000fe03")
    for preface in (ours, grpcio, _settings_frame(0), _settings_frame(0, stream=1 << 31)):
        assert http2_server_preface(preface), preface
        assert http2_server_preface(preface + b"\x00\x00\x04\x08")  # WINDOW_UPDATE follows


@given(st.integers(0, 8), st.integers(1, 9))
def test_every_prefix_of_a_settings_frame_waits_for_the_client(n: int, cut: int) -> None:
    assert http2_server_preface(_settings_frame(n)[:cut])


@pytest.mark.parametrize(
    "first",
    [
        b"",
        b"220 hm-smtp ready\r\n",  # SMTP banner
        b"J\x00\x00\x00\x0a5.7.42\x00",  # MySQL greeting (little-endian length)
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"HTTP/1.1 200 OK\r\n",
        _settings_frame(2, flags=0x1)[:9],  # a SETTINGS ACK is never a preface
        _settings_frame(1, stream=1),  # SETTINGS on a stream
        b"\x00\x00\x07\x04\x00\x00\x00\x00\x00",  # length not a multiple of 6
        b"\x00\x40\x02\x04\x00\x00\x00\x00\x00",  # longer than the initial frame size
        b"\x00\x00\x08\x06\x00\x00\x00\x00\x00",  # PING first
    ],
)
def test_banners_and_other_frames_are_not_an_h2_preface(first: bytes) -> None:
    assert not http2_server_preface(first)
