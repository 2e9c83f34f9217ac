"""RequestReader good paths: GET, POST with Content-Length, chunked with trailers,
pipelining, keep-alive rules, HEAD, CONNECT pause/switch/resume, clean close."""

from __future__ import annotations

import pytest
from h1_playbook import outcome

from hybridmesh.proxy.protocols.http1 import (
    END_OF_MESSAGE,
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    LocalProtocolError,
    ReaderState,
    Request,
    RequestReader,
)

GET = (
    b"GET /api/items?id=1 HTTP/1.1\r\nHost: Web.Shop:8080\r\nUser-Agent: t/1\r\n"
    b"X-Pad:  \t spaced value \t\r\nX-Empty:\r\nX-Bin: caf\xe9\r\n\r\n"
)
BOTH = pytest.mark.parametrize("fast", [True, False], ids=["fast", "slow"])


@BOTH
def test_get(fast: bool) -> None:
    events, error = outcome(GET, fast=fast)
    assert error is None
    assert events == (
        Request(
            b"GET",
            b"/api/items?id=1",
            (
                (b"host", b"Web.Shop:8080"),
                (b"user-agent", b"t/1"),
                (b"x-pad", b"spaced value"),
                (b"x-empty", b""),
                (b"x-bin", b"caf\xe9"),
            ),
            b"1.1",
            keep_alive=True,
            content_length=0,
        ),
        END_OF_MESSAGE,
        ConnectionClosed(),
    )


@BOTH
def test_post_with_content_length_arriving_in_pieces(fast: bool) -> None:
    reader = RequestReader(fast_path=fast)
    reader.receive_data(b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhel")
    request = reader.next_event()
    assert isinstance(request, Request) and request.content_length == 11
    assert reader.next_event() == Data(b"hel")
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"lo wor")
    assert reader.next_event() == Data(b"lo wor")
    assert reader.state is ReaderState.BODY
    reader.receive_data(b"ldGET")  # the body's last 2 bytes, then the next request begins
    assert reader.next_event() == Data(b"ld")
    assert reader.next_event() == END_OF_MESSAGE
    assert reader.next_event() is NEED_DATA
    assert reader.state is ReaderState.IDLE


@BOTH
def test_chunked_with_extensions_and_trailers(fast: bool) -> None:
    data = (
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"5;name=\"quoted \\\" v\";flag\r\nhello\r\n00000a\r\n0123456789\r\n"
        b"0\r\nX-Checksum: abc\r\nX-Other:  2 \r\n\r\n"
    )
    events, error = outcome(data, fast=fast)
    assert error is None
    request = events[0]
    assert isinstance(request, Request) and request.content_length is None
    assert events[1:] == (
        Data(b"hello0123456789"),
        EndOfMessage(((b"x-checksum", b"abc"), (b"x-other", b"2"))),
        ConnectionClosed(),
    )


@BOTH
def test_pipelined_requests_come_out_in_order(fast: bool) -> None:
    data = (
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
        b"HEAD /4 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    events, error = outcome(data, fast=fast)
    assert error is None
    summary = [
        (type(e).__name__, getattr(e, "target", getattr(e, "data", None))) for e in events
    ]
    assert summary == [
        ("Request", b"/1"), ("EndOfMessage", None),
        ("Request", b"/2"), ("Data", b"abc"), ("EndOfMessage", None),
        ("Request", b"/3"), ("Data", b"z"), ("EndOfMessage", None),
        ("Request", b"/4"), ("EndOfMessage", None),
        ("ConnectionClosed", None),
    ]


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
    ],
)
def test_keep_alive_rules(head: bytes, keep_alive: bool) -> None:
    """After a closing request, nothing more is parsed: the pipelined GET is discarded."""
    events, error = outcome(head + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    assert error is None
    first = events[0]
    assert isinstance(first, Request) and first.keep_alive is keep_alive
    targets = [e.target for e in events if isinstance(e, Request)]
    assert targets == ([b"/", b"/next"] if keep_alive else [b"/"])


def test_after_close_request_input_is_discarded_until_eof() -> None:
    reader = RequestReader()
    reader.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert isinstance(reader.next_event(), Request)
    assert reader.next_event() == END_OF_MESSAGE
    assert reader.state is ReaderState.MUST_CLOSE
    reader.receive_data(b"garbage that would be an error \n\n")
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"")
    assert reader.next_event() == ConnectionClosed()
    assert reader.next_event() == ConnectionClosed()  # idempotent
    with pytest.raises(LocalProtocolError):
        reader.receive_data(b"x")


def test_head_request_has_no_body() -> None:
    events, error = outcome(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
    assert error is None
    assert [type(e) for e in events] == [Request, EndOfMessage, ConnectionClosed]
    assert isinstance(events[0], Request) and events[0].method == b"HEAD"


@BOTH
def test_unknown_method_absolute_and_asterisk_forms(fast: bool) -> None:
    data = (
        b"PURGE /cache HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET HTTP://A:80/x?y HTTP/1.1\r\nHost: a:80\r\n\r\n"
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    events, error = outcome(data, fast=fast)
    assert error is None
    assert [e.target for e in events if isinstance(e, Request)] == [
        b"/cache", b"HTTP://A:80/x?y", b"*",
    ]


def test_one_leading_empty_line_is_tolerated() -> None:
    """RFC 9112 §2.2: some clients send CRLF after a POST body."""
    data = (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"
        b"\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    for mode in ("whole", "bytewise"):
        events, error = outcome(data, mode)
        assert error is None
        assert [e.target for e in events if isinstance(e, Request)] == [b"/", b"/2"]


def test_connect_pauses_then_switches_to_a_tunnel() -> None:
    reader = RequestReader()
    reader.receive_data(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n\x00binary")
    request = reader.next_event()
    assert isinstance(request, Request) and request.target == b"db:5432"
    assert reader.next_event() == END_OF_MESSAGE
    assert reader.next_event() is NEED_DATA
    assert reader.state is ReaderState.PAUSED
    reader.receive_data(b" more")
    assert reader.switch_protocol() == b"\x00binary more"
    assert reader.state is ReaderState.SWITCHED
    with pytest.raises(LocalProtocolError):
        reader.receive_data(b"x")


def test_refused_connect_resumes_http() -> None:
    reader = RequestReader()
    reader.receive_data(
        b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    reader.next_event()
    reader.next_event()
    assert reader.next_event() is NEED_DATA
    reader.resume()
    nxt = reader.next_event()
    assert isinstance(nxt, Request) and nxt.method == b"GET"
    with pytest.raises(LocalProtocolError):
        reader.switch_protocol()  # only valid while paused


def test_upgrade_request_is_an_ordinary_request() -> None:
    """We never upgrade (h2c smuggling): the bytes after the head are the next request."""
    data = (
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    events, error = outcome(data)
    assert error is None
    assert [e.target for e in events if isinstance(e, Request)] == [b"/", b"/2"]


def test_eof_between_messages_is_a_clean_close() -> None:
    assert outcome(b"") == ((ConnectionClosed(),), None)
    events, error = outcome(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert error is None and events[-1] == ConnectionClosed()
