"""HTTP/1 ↔ HTTP/2 head conversion (RFC 9113 §8.2.2, §8.2.3, §8.3.1), through the real
readers, cores and writers: what HTTP/2 forbids never crosses, nothing else is lost."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_http2_wire import Wire

from hybridmesh.proxy.protocols.http1 import (
    ErrorCode,
    RemoteProtocolError,
    Request,
    RequestReader,
    Response,
    serialize_request,
)
from hybridmesh.proxy.protocols.http2 import (
    RequestHeaders,
    ResponseHeaders,
    h1_request_to_h2,
    h1_response_to_h2,
    h2_request_to_h1,
    h2_response_to_h1,
)


def read_request(raw: bytes) -> Request:
    reader = RequestReader()
    reader.receive_data(raw)
    event = reader.next_event()
    assert isinstance(event, Request)
    return event


def over_the_wire(fields: list[tuple[bytes, bytes]], end_stream: bool = True) -> RequestHeaders:
    """Send an HTTP/2 header list through a real client and server."""
    wire = Wire()
    sid = wire.client._conn.get_next_available_stream_id()
    wire.client.send_headers(sid, fields, end_stream=end_stream)
    [head] = wire.take_server()
    assert isinstance(head, RequestHeaders)
    return head


def test_origin_form_request_host_becomes_authority_and_hop_fields_go() -> None:
    req = read_request(
        b"POST /cart?x=1 HTTP/1.1\r\nHost: shop.ns:8080\r\nConnection: keep-alive, x-hop\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Hop: 1\r\nTE: trailers, deflate\r\n"
        b"Content-Length: 3\r\nX-Keep: yes\r\n\r\nabc")
    fields = h1_request_to_h2(req)
    assert fields == [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/cart?x=1"),
        (b":authority", b"shop.ns:8080"), (b"te", b"trailers"), (b"content-length", b"3"),
        (b"x-keep", b"yes"),
    ]
    back = h2_request_to_h1(over_the_wire(fields, end_stream=False))
    assert back == Request(b"POST", b"/cart?x=1", (
        (b"host", b"shop.ns:8080"), (b"te", b"trailers"), (b"content-length", b"3"),
        (b"x-keep", b"yes")), content_length=3)


@pytest.mark.parametrize(("raw", "pseudo"), [
    (b"GET HTTP://other.ns:81/p?q HTTP/1.1\r\nHost: other.ns:81\r\n\r\n",
     [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/p?q"),
      (b":authority", b"other.ns:81")]),
    (b"GET https://a.ns HTTP/1.1\r\nHost: a.ns\r\n\r\n",
     [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a.ns")]),
    (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
     [(b":method", b"OPTIONS"), (b":scheme", b"http"), (b":path", b"*"), (b":authority", b"a")]),
    (b"CONNECT db.ns:5432 HTTP/1.1\r\nHost: db.ns:5432\r\n\r\n",
     [(b":method", b"CONNECT"), (b":authority", b"db.ns:5432")]),
])
def test_target_forms(raw: bytes, pseudo: list[tuple[bytes, bytes]]) -> None:
    fields = h1_request_to_h2(read_request(raw))
    assert fields == pseudo
    head = over_the_wire(fields)
    back = h2_request_to_h1(head)
    assert back.target == (head.authority if head.method == b"CONNECT" else head.path)
    assert back.headers[0] == (b"host", pseudo[-1][1])


def test_cookie_crumbs_are_joined_for_http1() -> None:
    head = RequestHeaders(1, b"GET", b"http", b"a", b"/", (
        (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2"), (b"cookie", b"c=3")),
        True)
    back = h2_request_to_h1(head)
    assert back.headers == ((b"host", b"a"), (b"cookie", b"a=1; b=2; c=3"), (b"accept", b"*/*"))
    assert back.content_length == 0


def test_a_head_without_any_authority_cannot_become_http1() -> None:
    head = RequestHeaders(1, b"GET", b"http", b"", b"/", (), True)
    with pytest.raises(RemoteProtocolError) as info:
        h2_request_to_h1(head)
    assert info.value.code is ErrorCode.MISSING_HOST
    fallback = RequestHeaders(1, b"GET", b"http", b"", b"/", ((b"host", b"h"),), True)
    assert h2_request_to_h1(fallback).headers == ((b"host", b"h"),)


def test_body_framing_follows_content_length_or_becomes_chunked() -> None:
    streaming = RequestHeaders(1, b"POST", b"http", b"a", b"/", (), False)
    assert h2_request_to_h1(streaming).content_length is None
    assert b"transfer-encoding: chunked" in serialize_request(h2_request_to_h1(streaming))
    bad = RequestHeaders(1, b"POST", b"http", b"a", b"/", ((b"content-length", b"-1"),), False)
    with pytest.raises(RemoteProtocolError):
        h2_request_to_h1(bad)


def test_response_round_trip() -> None:
    resp = Response(404, b"Not Found", (
        (b"connection", b"close"), (b"transfer-encoding", b"chunked"), (b"content-type", b"t"),
        (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")), content_length=None)
    fields = h1_response_to_h2(resp)
    assert fields == [(b":status", b"404"), (b"content-type", b"t"), (b"set-cookie", b"a=1"),
                      (b"set-cookie", b"b=2")]
    head = ResponseHeaders(1, 404, tuple(fields[1:]), False)
    assert h2_response_to_h1(head) == Response(404, b"Not Found", tuple(fields[1:]),
                                               content_length=None)
    odd = h2_response_to_h1(ResponseHeaders(1, 299, ((b"content-length", b"0"),), True))
    assert (odd.reason, odd.content_length) == (b"", 0)


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
VALUE = st.text(alphabet=[chr(c) for c in range(0x20, 0x7F)], max_size=30).map(
    lambda t: t.strip(" ").encode())


@settings(max_examples=60, deadline=None)
@given(fields=st.lists(st.tuples(TOKEN.map(str.encode), VALUE), max_size=8),
       path=TOKEN.map(lambda t: b"/" + t.encode()),
       method=st.sampled_from([b"GET", b"POST", b"DELETE"]))
def test_end_to_end_fields_survive_http1_to_http2_to_http1(
        fields: list[tuple[bytes, bytes]], path: bytes, method: bytes) -> None:
    forbidden = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                 b"upgrade", b"http2-settings", b"te", b"host", b"content-length", b"cookie"}
    kept = [(n, v) for n, v in fields if n not in forbidden]
    raw = b"%s %s HTTP/1.1\r\nhost: svc.ns\r\n%s\r\n" % (
        method, path, b"".join(b"%s: %s\r\n" % f for f in kept))
    reader = RequestReader()
    reader.receive_data(raw)
    req = reader.next_event()
    assert isinstance(req, Request)
    back = h2_request_to_h1(over_the_wire(h1_request_to_h2(req)))
    assert (back.method, back.target) == (method, path)
    assert back.headers == ((b"host", b"svc.ns"), *req.headers[1:])
    assert serialize_request(back).startswith(b"%s %s HTTP/1.1\r\nhost: svc.ns\r\n" % (
        method, path))
