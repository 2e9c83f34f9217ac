"""ResponseReader: framing by request method and status, interim responses, close-delimited
bodies, CONNECT tunnels, and 502 for anything an upstream gets wrong."""

from __future__ import annotations

import pytest
from h1_playbook import outcome

from hybridmesh.proxy.protocols.http1 import (
    END_OF_MESSAGE,
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    ErrorCode,
    InformationalResponse,
    ReaderState,
    RemoteProtocolError,
    Response,
    ResponseReader,
)

BOTH = pytest.mark.parametrize("fast", [True, False], ids=["fast", "slow"])


def kinds(events: tuple[object, ...]) -> list[str]:
    return [type(e).__name__ for e in events]


@BOTH
def test_content_length_response(fast: bool) -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    events, error = outcome(data, expect=[b"GET"], fast=fast)
    assert error is None
    assert events == (
        Response(200, b"OK", ((b"content-type", b"text/plain"), (b"content-length", b"5")),
                 b"1.1", keep_alive=True, content_length=5),
        Data(b"hello"),
        END_OF_MESSAGE,
        ConnectionClosed(),
    )


@BOTH
def test_responses_follow_the_expected_methods(fast: bool) -> None:
    """HEAD and 204/304 answers carry no body even with a Content-Length; order matters."""
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    events, error = outcome(data, expect=[b"HEAD", b"DELETE", b"GET", b"GET"], fast=fast)
    assert error is None
    assert kinds(events) == ["Response", "EndOfMessage"] * 3 + [
        "Response", "Data", "EndOfMessage", "ConnectionClosed",
    ]
    head_answer = events[0]
    assert isinstance(head_answer, Response) and head_answer.content_length == 1234


@BOTH
def test_interim_responses_then_final(fast: bool) -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n"
    )
    events, error = outcome(data, expect=[b"POST"], fast=fast)
    assert error is None
    assert events[:2] == (
        InformationalResponse(100, b"Continue", (), b"1.1"),
        InformationalResponse(103, b"Early Hints", ((b"link", b"</a>"),), b"1.1"),
    )
    assert events[3:] == (Data(b"ok"), EndOfMessage(((b"x-t", b"1"),)), ConnectionClosed())


def test_close_delimited_body_ends_at_eof() -> None:
    reader = ResponseReader()
    reader.expect(b"GET")
    reader.receive_data(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\npart one ")
    response = reader.next_event()
    assert isinstance(response, Response)
    assert (response.keep_alive, response.content_length) == (False, None)
    assert reader.next_event() == Data(b"part one ")
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"part two")
    assert reader.next_event() == Data(b"part two")
    reader.receive_data(b"")
    assert reader.next_event() == END_OF_MESSAGE
    assert reader.next_event() == ConnectionClosed()


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", True),
    ],
)
def test_response_keep_alive(head: bytes, keep_alive: bool) -> None:
    events, error = outcome(head, expect=[b"GET"])
    assert error is None
    assert isinstance(events[0], Response) and events[0].keep_alive is keep_alive


def test_connect_success_opens_a_tunnel() -> None:
    reader = ResponseReader()
    reader.expect(b"CONNECT")
    reader.receive_data(b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x01")
    assert isinstance(reader.next_event(), Response)
    assert reader.next_event() == END_OF_MESSAGE
    assert reader.next_event() is NEED_DATA
    assert reader.state is ReaderState.PAUSED
    assert reader.switch_protocol() == b"\x16\x03\x01"


@BOTH
@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", ErrorCode.UNEXPECTED_INTERIM),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
         ErrorCode.CONTENT_LENGTH_AND_TRANSFER_ENCODING),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
         ErrorCode.DUPLICATE_CONTENT_LENGTH),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", ErrorCode.BAD_TRANSFER_ENCODING),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", ErrorCode.BAD_LINE_ENDING),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", ErrorCode.OBS_FOLD),
        (b"HTTP/2 200\r\n\r\n", ErrorCode.BAD_STATUS_LINE),
        (b"HTTP/1.1 20 OK\r\n\r\n", ErrorCode.BAD_STATUS_LINE),
        (b"HTTP/1.1 099 Low\r\n\r\n", ErrorCode.BAD_STATUS_LINE),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", ErrorCode.INCOMPLETE_MESSAGE),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
         ErrorCode.UNSOLICITED_RESPONSE),
    ],
    ids=["101", "cl-te", "dup-cl", "te-gzip", "bare-lf", "obs-fold", "h2-version",
         "short-status", "status-099", "truncated", "unsolicited"],
)
def test_upstream_errors_answer_502(data: bytes, code: ErrorCode, fast: bool) -> None:
    for mode in ("whole", "bytewise"):
        assert outcome(data, mode, expect=[b"GET"], fast=fast)[1] == (code, 502)


def test_bytes_with_nothing_outstanding_are_unsolicited() -> None:
    reader = ResponseReader()
    reader.receive_data(b"H")
    with pytest.raises(RemoteProtocolError) as err:
        reader.next_event()
    assert (err.value.code, err.value.status) == (ErrorCode.UNSOLICITED_RESPONSE, 502)


def test_idle_upstream_close_is_clean() -> None:
    """An upstream closing a pooled keep-alive connection is not an error."""
    assert outcome(b"", expect=[]) == ((ConnectionClosed(),), None)
    assert outcome(b"", expect=[b"GET"]) == ((ConnectionClosed(),), None)


def test_status_line_without_reason() -> None:
    events, error = outcome(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", expect=[b"GET"])
    assert error is None
    assert isinstance(events[0], Response) and (events[0].status, events[0].reason) == (200, b"")
