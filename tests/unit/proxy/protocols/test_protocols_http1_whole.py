"""``receive_message`` (the one-read fast path the proxy uses) is only a shortcut: fed any way,
any bytes, a reader driven with it yields the same events and the same error as one driven
with ``receive_data`` + ``next_event`` (h1_playbook's reference)."""

from __future__ import annotations

from collections.abc import Sequence

from h1_playbook import Reader, drain, merge_data, outcome, pieces
from hypothesis import given
from hypothesis import strategies as st
from test_protocols_http1_fuzz import (
    FUZZ,
    SMALL,
    VALID_REQUESTS,
    VALID_RESPONSES,
    cut_points,
    mutated,
)

from hybridmesh.proxy.protocols.http1 import (
    END_OF_MESSAGE,
    Data,
    EndOfMessage,
    Event,
    Limits,
    ReaderState,
    RemoteProtocolError,
    Request,
    RequestReader,
    Response,
    ResponseReader,
)


def via_message(data: bytes, mode: str | Sequence[int], *, expect: Sequence[bytes] | None = None,
                limits: Limits | None = None) -> tuple[tuple[Event, ...], object]:
    """h1_playbook.outcome, but each piece goes in through ``receive_message``."""
    reader: Reader
    if expect is None:
        reader = RequestReader(limits)
    else:
        reader = ResponseReader(limits)
        for method in expect:
            reader.expect(method)
    events: list[Event] = []
    try:
        for piece in [*pieces(data, mode), b""]:
            got = reader.receive_message(piece) if piece else None
            if not piece:
                reader.receive_data(b"")
            if got is not None:
                head, body, end = got
                events.append(head)
                if end is not None:
                    events.extend([Data(body)] if body else [])
                    events.append(end)
            if not drain(reader, events):
                break
    except RemoteProtocolError as exc:
        return merge_data(events), (exc.code, exc.status)
    return merge_data(events), None


@FUZZ
@given(data=mutated(VALID_REQUESTS), cuts=cut_points)
def test_requests_same_as_event_by_event(data: bytes, cuts: list[int]) -> None:
    for mode in ("whole", cuts):
        assert via_message(data, mode) == outcome(data, "whole")
        assert via_message(data, mode, limits=SMALL) == outcome(data, "whole", limits=SMALL)


@FUZZ
@given(case=st.sampled_from(VALID_RESPONSES), seed=st.data(), cuts=cut_points)
def test_responses_same_as_event_by_event(case: tuple[bytes, list[bytes]],
                                          seed: st.DataObject, cuts: list[int]) -> None:
    data = seed.draw(mutated([case[0]]))
    for mode in ("whole", cuts):
        assert via_message(data, mode, expect=case[1]) == outcome(data, "whole", expect=case[1])


@FUZZ
@given(data=st.binary(max_size=200), cuts=cut_points)
def test_random_bytes_same_as_event_by_event(data: bytes, cuts: list[int]) -> None:
    assert via_message(data, cuts) == outcome(data, "whole")
    assert via_message(data, cuts, expect=[b"GET"]) == outcome(data, "whole", expect=[b"GET"])


def test_a_whole_message_comes_back_in_one_call() -> None:
    reader = RequestReader()
    got = reader.receive_message(b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    assert got is not None
    head, body, end = got
    assert isinstance(head, Request) and head.target == b"/f"
    assert (body, end) == (b"hello", END_OF_MESSAGE)
    assert reader.state is ReaderState.IDLE
    responses = ResponseReader()
    responses.expect(b"HEAD")
    got = responses.receive_message(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
    assert got is not None and isinstance(got[0], Response) and got[1:] == (b"", END_OF_MESSAGE)


def test_partial_or_pipelined_reads_leave_the_rest_to_next_event() -> None:
    reader = RequestReader()
    got = reader.receive_message(b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel")
    assert got is not None and got[2] is None  # head only: the body is still coming
    assert reader.next_event() == Data(b"hel")
    reader = RequestReader()
    got = reader.receive_message(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n")
    assert got is not None and got[2] is None  # another request follows
    assert isinstance(reader.next_event(), EndOfMessage)
    # chunked bodies, an empty line first, a busy reader: nothing taken
    chunked = b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    got = RequestReader().receive_message(chunked)
    assert got is not None and got[2] is None
    assert RequestReader().receive_message(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n") is None
    assert ResponseReader().receive_message(b"HTTP/1.1 200 OK\r\n\r\n") is None  # unsolicited
