"""Canonical serialization: hop-by-hop stripping, our own framing, keep-alive, bodiless
answers, injection refused, and parse → serialize → parse round trips."""

from __future__ import annotations

import dataclasses

import pytest
from h1_playbook import outcome
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridmesh.proxy.protocols.http1 import (
    Data,
    EndOfMessage,
    Framing,
    InformationalResponse,
    LocalProtocolError,
    Request,
    Response,
    frame_data,
    frame_end,
    request_framing,
    response_framing,
    serialize_informational,
    serialize_request,
    serialize_response,
)

HOP_HEADERS = (
    (b"host", b"a"),
    (b"connection", b"keep-alive, X-Secret-Hop, Upgrade, HTTP2-Settings, host"),
    (b"x-secret-hop", b"1"),
    (b"keep-alive", b"timeout=5"),
    (b"proxy-connection", b"keep-alive"),
    (b"te", b"gzip, trailers;q=1"),
    (b"transfer-encoding", b"chunked"),
    (b"content-length", b"99"),
    (b"upgrade", b"h2c"),
    (b"http2-settings", b"AAMAAABkAAQAAP__"),
    (b"accept", b"*/*"),
)


def test_hop_by_hop_fields_are_stripped() -> None:
    head = serialize_request(Request(b"GET", b"/x", HOP_HEADERS, content_length=0))
    assert head == b"GET /x HTTP/1.1\r\nhost: a\r\naccept: */*\r\nte: trailers\r\n\r\n"


def test_te_without_trailers_is_dropped_and_never_on_responses() -> None:
    req = Request(b"GET", b"/", ((b"host", b"a"), (b"te", b"gzip")))
    assert b"te:" not in serialize_request(req)
    resp = Response(200, b"OK", ((b"te", b"trailers"),), content_length=0)
    assert b"te:" not in serialize_response(resp)


@pytest.mark.parametrize(
    ("method", "length", "framing", "field"),
    [
        (b"GET", 0, Framing.NONE, None),
        (b"POST", 0, Framing.LENGTH, b"content-length: 0\r\n"),
        (b"POST", 12, Framing.LENGTH, b"content-length: 12\r\n"),
        (b"DELETE", 3, Framing.LENGTH, b"content-length: 3\r\n"),
        (b"PUT", None, Framing.CHUNKED, b"transfer-encoding: chunked\r\n"),
    ],
)
def test_request_framing_is_ours(
    method: bytes, length: int | None, framing: Framing, field: bytes | None
) -> None:
    fields = ((b"host", b"a"), (b"content-length", b"999"))
    req = Request(method, b"/", fields, content_length=length)
    head = serialize_request(req)
    assert request_framing(req) is framing
    assert b"999" not in head
    if field is None:
        assert b"content-length" not in head and b"transfer-encoding" not in head
    else:
        assert head.count(field) == 1


def test_request_keep_alive_choice_and_version() -> None:
    req = Request(b"GET", b"/", ((b"host", b"a"),), http_version=b"1.0")
    assert serialize_request(req).startswith(b"GET / HTTP/1.1\r\n")
    assert serialize_request(req, keep_alive=False).endswith(b"connection: close\r\n\r\n")


@pytest.mark.parametrize(
    ("resp", "method", "version", "expect_framing", "present", "absent"),
    [
        (Response(200, b"OK", (), content_length=5), b"GET", b"1.1", Framing.LENGTH,
         [b"content-length: 5"], [b"transfer-encoding"]),
        (Response(200, b"OK", (), content_length=None), b"GET", b"1.1", Framing.CHUNKED,
         [b"transfer-encoding: chunked"], [b"content-length", b"connection"]),
        (Response(200, b"OK", (), content_length=None), b"GET", b"1.0", Framing.CLOSE,
         [b"connection: close"], [b"transfer-encoding", b"content-length"]),
        (Response(200, b"OK", (), content_length=5), b"GET", b"1.0", Framing.LENGTH,
         [b"connection: keep-alive", b"content-length: 5"], []),
        (Response(200, b"OK", (), content_length=1234), b"HEAD", b"1.1", Framing.NONE,
         [b"content-length: 1234"], [b"transfer-encoding"]),
        (Response(204, b"No Content", (), content_length=3), b"DELETE", b"1.1", Framing.NONE,
         [], [b"content-length", b"transfer-encoding"]),
        (Response(304, b"Not Modified", (), content_length=None), b"GET", b"1.1", Framing.NONE,
         [], [b"content-length", b"transfer-encoding"]),
    ],
    ids=["length", "chunked", "close-for-1.0", "1.0-keep-alive", "head", "204", "304"],
)
def test_response_framing(  # noqa: PLR0917 (parametrized)
    resp: Response, method: bytes, version: bytes, expect_framing: Framing,
    present: list[bytes], absent: list[bytes],
) -> None:
    head = serialize_response(resp, request_method=method, http_version=version)
    assert response_framing(resp, method, version) is expect_framing
    for field in present:
        assert field in head
    for field in absent:
        assert field not in head


def test_response_without_keep_alive_says_close() -> None:
    head = serialize_response(Response(200, b"OK", (), content_length=0), keep_alive=False)
    assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def test_chunk_framing_with_trailers() -> None:
    assert frame_data(Framing.CHUNKED, b"hello world") == b"b\r\nhello world\r\n"
    assert frame_data(Framing.CHUNKED, b"") == b""  # an empty chunk would end the body
    assert frame_data(Framing.LENGTH, b"raw") == b"raw"
    trailers = ((b"x-sum", b"1"), (b"content-length", b"5"))
    assert frame_end(Framing.CHUNKED, trailers) == b"0\r\nx-sum: 1\r\n\r\n"
    assert frame_end(Framing.LENGTH, trailers) == b""
    with pytest.raises(LocalProtocolError):
        frame_data(Framing.NONE, b"x")


def test_informational() -> None:
    interim = InformationalResponse(103, b"Early Hints", ((b"link", b"</a>"),))
    assert serialize_informational(interim) == b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
    with pytest.raises(LocalProtocolError):
        serialize_informational(InformationalResponse(101, b"Switching Protocols", ()))


@pytest.mark.parametrize(
    "req",
    [
        Request(b"GET", b"/", ((b"host", b"a"), (b"x", b"v\r\nInjected: 1"))),
        Request(b"GET", b"/", ((b"host", b"a"), (b"x", b"v\x00"))),
        Request(b"GET", b"/", ((b"host", b"a"), (b"X-Upper", b"v"))),
        Request(b"GET", b"/", ((b"host", b"a"), (b"bad name", b"v"))),
        Request(b"GET", b"/", ((b"host", b"a"), (b"", b"v"))),
        Request(b"GET", b"/ HTTP/1.1\r\nX: y", ((b"host", b"a"),)),
        Request(b"G T", b"/", ((b"host", b"a"),)),
        Request(b"GET", b"/", ((b"accept", b"*/*"),)),  # HTTP/1.1 needs a host
    ],
    ids=["crlf-value", "nul-value", "uppercase-name", "space-name", "empty-name",
         "crlf-target", "bad-method", "no-host"],
)
def test_invalid_events_are_local_errors(req: Request) -> None:
    with pytest.raises(LocalProtocolError):
        serialize_request(req)


def test_edited_parsed_headers_are_validated_again() -> None:
    """Headers straight from a reader skip validation; any edit makes a plain tuple."""
    events, _ = outcome(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n")
    parsed = events[0]
    assert isinstance(parsed, Request)
    assert serialize_request(parsed) == b"GET / HTTP/1.1\r\nhost: a\r\nx-a: 1\r\n\r\n"
    injected = dataclasses.replace(parsed, headers=(*parsed.headers, (b"x-b", b"1\r\nx-c: 2")))
    with pytest.raises(LocalProtocolError):
        serialize_request(injected)
    rewritten = dataclasses.replace(parsed, target=b"/new HTTP/1.1\r\nx: y")
    with pytest.raises(LocalProtocolError):
        serialize_request(rewritten)


def test_invalid_response_fields_are_local_errors() -> None:
    with pytest.raises(LocalProtocolError):
        serialize_response(Response(200, b"OK\r\nX: y", ()))
    with pytest.raises(LocalProtocolError):
        serialize_response(Response(20, b"OK", ()))
    with pytest.raises(LocalProtocolError):
        serialize_response(Response(200, b"OK", ((b"x", b"a\nb"),)))


def relay_request(data: bytes) -> bytes:
    """What the proxy would send upstream for the requests in ``data``."""
    events, error = outcome(data)
    assert error is None
    out, framing = [], Framing.NONE
    for event in events:
        if isinstance(event, Request):
            framing = request_framing(event)
            out.append(serialize_request(event))
        elif isinstance(event, Data):
            out.append(frame_data(framing, event.data))
        elif isinstance(event, EndOfMessage):
            out.append(frame_end(framing, event.trailers))
    return b"".join(out)


def test_relay_of_a_chunked_request_is_canonical() -> None:
    data = (
        b"POST /u HTTP/1.1\r\nHOST: a\r\nTransfer-Encoding: chunked\r\nX-A:  1 \r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"
    )
    assert relay_request(data) == (
        b"POST /u HTTP/1.1\r\nhost: a\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nabcde\r\n0\r\nx-sum: 5\r\n\r\n"  # chunk boundaries are not preserved
    )


field_name = st.from_regex(rb"\A[a-z][a-z0-9-]{0,11}\Z")
field_value = st.from_regex(rb"\A(?:[\x21-\x7e](?:[ \x21-\x7e]{0,10}[\x21-\x7e])?)?\Z")


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PURGE"]),
    path=st.from_regex(rb"\A/[a-zA-Z0-9/_.?=&%-]{0,20}\Z"),
    fields=st.lists(st.tuples(field_name, field_value), max_size=6),
    body=st.binary(max_size=40),
    chunked=st.booleans(),
)
def test_round_trip_preserves_the_message(
    method: bytes, path: bytes, fields: list[tuple[bytes, bytes]], body: bytes, chunked: bool
) -> None:
    """parse(serialize(parse(x))) keeps method, target, end-to-end fields and body."""
    fields = [(n, v) for n, v in fields if n not in (b"host", b"connection", b"te")]
    req = Request(method, path, ((b"host", b"a"), *fields),
                  content_length=None if chunked else len(body))
    framing = request_framing(req)
    wire = serialize_request(req) + frame_data(framing, body) + frame_end(framing)
    events, error = outcome(wire)
    assert error is None
    parsed = events[0]
    assert isinstance(parsed, Request)
    expected = tuple((n, v) for n, v in req.headers if n not in (
        b"content-length", b"transfer-encoding", b"keep-alive", b"upgrade",
        b"proxy-connection", b"http2-settings"))
    framing_fields = {b"content-length", b"transfer-encoding"}
    assert tuple(f for f in parsed.headers if f[0] not in framing_fields) == expected
    assert dataclasses.replace(parsed, headers=()) == dataclasses.replace(
        req, headers=(), content_length=req.content_length if req.content_length is None
        or framing is not Framing.NONE else 0)
    assert b"".join(e.data for e in events if isinstance(e, Data)) == body
