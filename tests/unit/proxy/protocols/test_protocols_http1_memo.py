"""What the hot path remembers between messages changes nothing but the cost.

* a reader memoizes the last head its fast path parsed on a keep-alive connection: a
  stream of messages, repeated or not, read with it gives the events (and errors) of the
  slow path, which never memoizes; a response head is recalled only for the same method;
* the Host, method and status-line checks done once per distinct value still refuse a
  bad value seen after good ones.
"""

from __future__ import annotations

import pytest
from h1_playbook import outcome
from hypothesis import given
from hypothesis import strategies as st
from test_protocols_http1_fuzz import FUZZ, VALID_REQUESTS, mutated

from hybridmesh.proxy.protocols.http1 import (
    END_OF_MESSAGE,
    Data,
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    serialize_request,
    serialize_response,
)


def memo(reader: RequestReader) -> object:
    """The reader's memo (a function: mypy would keep an asserted narrowing)."""
    return reader._memo


GET = b"GET /a HTTP/1.1\r\nHost: web\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


def test_a_repeated_request_head_is_recalled_with_its_state() -> None:
    reader = RequestReader()
    first = reader.receive_message(GET)
    again = reader.receive_message(GET)
    assert first is not None and again is not None
    assert again[0] is first[0]  # the memoized event itself
    assert again[1:] == (b"", END_OF_MESSAGE)
    post = b"POST /a HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\n"
    got = reader.receive_message(post + b"abc")
    assert got is not None and isinstance(got[0], Request) and got[0].method == b"POST"
    assert got[1:] == (b"abc", END_OF_MESSAGE)


def test_a_head_one_byte_longer_is_parsed_not_recalled() -> None:
    reader = RequestReader()
    reader.receive_message(GET)
    longer = GET.replace(b"/a", b"/ab")
    got = reader.receive_message(longer)
    assert got is not None and isinstance(got[0], Request) and got[0].target == b"/ab"
    bad = GET.replace(b"Host: web\r\n", b"Host: web\r\nHost: web\r\n")
    with pytest.raises(RemoteProtocolError):
        reader.receive_message(bad)
        reader.next_event()


def test_a_connection_whose_heads_keep_differing_stops_memoizing() -> None:
    reader = RequestReader()
    for i in range(7):  # a hit in between starts the count again
        assert reader.receive_message(GET.replace(b"/a", b"/%d" % i)) is not None
    assert reader.receive_message(GET.replace(b"/a", b"/6")) is not None
    assert memo(reader) is not None and reader._memo_misses == 0
    for i in range(8):
        assert reader.receive_message(GET.replace(b"/a", b"/x%d" % i)) is not None
    assert memo(reader) is None
    first, again = reader.receive_message(GET), reader.receive_message(GET)
    assert first is not None and again is not None
    assert again[0] == first[0] and again[0] is not first[0]  # parsed, not recalled
    assert memo(reader) is None


def test_a_closing_request_is_not_memoized() -> None:
    reader = RequestReader()
    close = b"GET /a HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
    got = reader.receive_message(close)
    assert got is not None and isinstance(got[0], Request) and not got[0].keep_alive
    assert reader._memo is None


def test_a_response_head_is_recalled_only_for_the_same_method() -> None:
    reader = ResponseReader()
    reader.expect(b"GET")
    first = reader.receive_message(OK)
    assert first is not None and first[1] == b"hi"
    reader.expect(b"HEAD")  # same head bytes: no body follows this time
    head = reader.receive_message(OK[:-2])
    assert head is not None and head[1:] == (b"", END_OF_MESSAGE)
    assert isinstance(head[0], Response) and head[0] is not first[0]
    reader.expect(b"HEAD")
    again = reader.receive_message(OK[:-2])
    assert again is not None and again[0] is head[0] and again[1:] == (b"", END_OF_MESSAGE)
    reader.expect(b"GET")
    body = reader.receive_message(OK)
    assert body is not None and body[1] == b"hi" and body[0] == first[0]


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(VALID_REQUESTS), mutated(VALID_REQUESTS)),
                min_size=1, max_size=6))
def test_streams_of_repeated_requests_read_as_the_slow_path_reads_them(msgs: list[bytes]
                                                                       ) -> None:
    data = b"".join(m for m in msgs for _ in range(2))  # each head twice: recalled
    assert outcome(data, "whole", fast=True) == outcome(data, "whole", fast=False)
    split = [len(m) for m in msgs]
    assert outcome(data, split, fast=True) == outcome(data, split, fast=False)


@FUZZ
@given(st.lists(st.sampled_from([b"GET", b"HEAD"]), min_size=1, max_size=6))
def test_responses_to_mixed_methods_read_as_the_slow_path_reads_them(methods: list[bytes]
                                                                     ) -> None:
    data = b"".join(OK if m == b"GET" else OK[:-2] for m in methods)
    fast = outcome(data, "whole", fast=True, expect=methods)
    assert fast == outcome(data, "whole", fast=False, expect=methods)
    assert sum(1 for e in fast[0] if isinstance(e, Data)) == methods.count(b"GET")


def test_a_bad_host_after_good_ones_is_refused() -> None:
    reader = RequestReader()
    for host in (b"web", b"web:80", b"10.0.0.1"):
        reader = RequestReader()
        assert reader.receive_message(GET.replace(b"web", host)) is not None
    reader = RequestReader()
    reader.receive_data(GET.replace(b"web", b"we b"))
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_checked_methods_and_status_lines_still_refuse_bad_ones() -> None:
    good = Request(b"GET", b"/", ((b"host", b"a"),))
    assert serialize_request(good).startswith(b"GET / HTTP/1.1\r\n")
    with pytest.raises(LocalProtocolError):
        serialize_request(Request(b"G T", b"/", ((b"host", b"a"),)))
    with pytest.raises(LocalProtocolError):
        serialize_request(Request(b"GET", b"/a b", ((b"host", b"a"),)))
    ok = Response(200, b"OK", ())
    assert serialize_response(ok).startswith(b"HTTP/1.1 200 OK\r\n")
    assert serialize_response(ok).startswith(b"HTTP/1.1 200 OK\r\n")  # memoized line
    with pytest.raises(LocalProtocolError):
        serialize_response(Response(200, b"O\r\nK", ()))
    with pytest.raises(LocalProtocolError):
        serialize_response(Response(1000, b"OK", ()))


def test_the_readers_event_makers_make_the_dataclass_values() -> None:
    from dataclasses import FrozenInstanceError

    from hybridmesh.proxy.protocols._h1events import MAKE_REQUEST, MAKE_RESPONSE

    fields = ((b"host", b"a"),)
    req = MAKE_REQUEST(b"PUT", b"/x", fields, b"1.0", False, None)
    assert req == Request(b"PUT", b"/x", fields, b"1.0", False, None)
    assert type(req) is Request and hash(req) == hash(Request(b"PUT", b"/x", fields, b"1.0",
                                                              False, None))
    resp = MAKE_RESPONSE(404, b"Nope", fields, b"1.1", True, 7)
    assert resp == Response(404, b"Nope", fields, b"1.1", True, 7)
    with pytest.raises(FrozenInstanceError):
        resp.status = 200  # type: ignore[misc]


@pytest.mark.parametrize("value", [b"\xb2", b"\xd9\xa1", b"+5", b"-1", b"1" * 19, b"0x1", b"1_0"])
def test_content_length_is_one_to_eighteen_ascii_digits(value: bytes) -> None:
    reader = RequestReader()
    reader.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_a_memoized_status_line_still_gives_each_response_its_own_head() -> None:
    reader = ResponseReader()
    for length, reason in ((b"2", b"OK"), (b"3", b"OK"), (b"2", b"Fine")):
        reader.expect(b"GET")
        data = b"HTTP/1.1 200 " + reason + b"\r\nContent-Length: " + length + b"\r\n\r\n"
        got = reader.receive_message(data + b"x" * int(length))
        assert got is not None and isinstance(got[0], Response)
        assert (got[0].status, got[0].reason, got[1]) == (200, reason, b"x" * int(length))
    reader.expect(b"GET")
    reader.receive_data(b"HTTP/1.1 099 Odd\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        reader.next_event()
