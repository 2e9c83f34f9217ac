"""h11's fuzz invariant, and then some: for any bytes (random, or mutations of valid
messages) a reader either yields events or raises RemoteProtocolError, never anything else;
and whole, byte-by-byte, randomly split, fast-path and slow-path feeding all agree on the
events and on the error (code and status)."""

from __future__ import annotations

from h1_playbook import outcome
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hybridmesh.proxy.protocols.http1 import Limits

VALID_REQUESTS = [
    b"GET /api/items?id=1 HTTP/1.1\r\nHost: web.shop:8080\r\nUser-Agent: t/1\r\n"
    b"Accept: */*\r\nConnection: keep-alive\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=\"q v\"\r\nhello\r\n3\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    b"GET /3 HTTP/1.0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n\x00\x01binary",
    b"GET http://a/x HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Pad: \t v \t\r\n\r\n",
]
VALID_RESPONSES = [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", [b"GET"]),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", [b"POST"]),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
     b"HTTP/1.0 200 OK\r\n\r\nuntil close", [b"HEAD", b"DELETE", b"GET"]),
    (b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\nHTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
     [b"GET", b"GET"]),
]
INTERESTING = [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\x00", b"0", b"-", b";", b",", b"a",
               b"\r\n\r\n", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 1\r\n", b"\xff"]
SMALL = Limits(max_head_size=256, max_headers=8, max_start_line=64, max_chunk_line=32)


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    """A valid message with a few insertions, deletions, replacements or duplications."""
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "dup"]))
        if kind == "insert":
            data[at:at] = draw(st.sampled_from(INTERESTING))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 3))]
        elif kind == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 40))]
    return bytes(data)


def assert_all_modes_agree(data: bytes, cuts: list[int], **kw: object) -> None:
    reference = outcome(data, "whole", fast=True, **kw)  # type: ignore[arg-type]
    for mode, fast in (("whole", False), ("bytewise", True), (cuts, True), (cuts, False)):
        got = outcome(data, mode, fast=fast, **kw)  # type: ignore[arg-type]
        assert got == reference, (mode, fast)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
cut_points = st.lists(st.integers(0, 400), max_size=4)


@FUZZ
@given(data=st.binary(max_size=200), cuts=cut_points)
@example(data=b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", cuts=[3])
def test_random_bytes_requests(data: bytes, cuts: list[int]) -> None:
    assert_all_modes_agree(data, cuts)


@FUZZ
@given(data=mutated(VALID_REQUESTS), cuts=cut_points)
def test_mutated_requests(data: bytes, cuts: list[int]) -> None:
    assert_all_modes_agree(data, cuts)


@FUZZ
@given(data=mutated(VALID_REQUESTS), cuts=cut_points)
def test_mutated_requests_small_limits(data: bytes, cuts: list[int]) -> None:
    assert_all_modes_agree(data, cuts, limits=SMALL)


@FUZZ
@given(case=st.sampled_from(VALID_RESPONSES), seed=st.data(), cuts=cut_points)
def test_mutated_responses(case: tuple[bytes, list[bytes]], seed: st.DataObject,
                           cuts: list[int]) -> None:
    data = seed.draw(mutated([case[0]]))
    assert_all_modes_agree(data, cuts, expect=case[1])


@FUZZ
@given(data=st.binary(max_size=200), cuts=cut_points)
def test_random_bytes_responses(data: bytes, cuts: list[int]) -> None:
    assert_all_modes_agree(b"HTTP/1.1 " + data, cuts, expect=[b"GET", b"HEAD"])


def test_valid_corpus_parses_without_error() -> None:
    """The mutation seeds themselves are accepted (else the fuzzing above proves little)."""
    for data in VALID_REQUESTS:
        assert outcome(data)[1] is None, data
    for data, methods in VALID_RESPONSES:
        assert outcome(data, expect=methods)[1] is None, data
