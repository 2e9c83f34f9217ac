"""Identity headers on the inbound side: client-sent ones never survive, ours are added, and
the result keeps the reader's ParsedHeaders type only when every field is provably writable."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.proxy.peer_identity import (
    PEER_IDENTITY_HEADER,
    XFCC_HEADER,
    VerifiedPeer,
    rewrite_identity_headers,
    vouched,
)
from hybridmesh.proxy.protocols._h1events import ParsedHeaders
from hybridmesh.proxy.protocols._h1writer import serialize_request
from hybridmesh.proxy.protocols.errors import LocalProtocolError
from hybridmesh.proxy.protocols.http1 import Request

CLIENT = SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/client")
WEB = SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/web")
OURS = VerifiedPeer.from_der(CLIENT, WEB, b"leaf").header_fields()


def parsed(*pairs: tuple[bytes, bytes]) -> Request:
    return Request(b"POST", b"/p", ParsedHeaders(pairs), b"1.1", False, 3)


def test_rewrite_copies_every_request_field() -> None:
    """rewrite builds Request positionally: a new field must be carried over too."""
    assert [f.name for f in fields(Request)] == [
        "method", "target", "headers", "http_version", "keep_alive", "content_length"]
    got = rewrite_identity_headers(parsed((b"host", b"web")), OURS)
    assert (got.method, got.target, got.http_version, got.keep_alive, got.content_length) == \
        (b"POST", b"/p", b"1.1", False, 3)


def test_forged_headers_are_replaced_and_the_result_stays_parsed() -> None:
    req = parsed((b"host", b"web"), (PEER_IDENTITY_HEADER, b"spiffe://x/admin"),
                 (b"accept", b"*/*"), (XFCC_HEADER, b"By=x"))
    got = rewrite_identity_headers(req, OURS)
    assert got.headers == ((b"host", b"web"), (b"accept", b"*/*"), *OURS)
    assert type(got.headers) is ParsedHeaders


def test_nothing_to_do_returns_the_same_request() -> None:
    req = parsed((b"host", b"web"))
    assert rewrite_identity_headers(req, ()) is req


def test_plaintext_peer_loses_forged_headers_and_gets_none() -> None:
    req = parsed((b"host", b"web"), (XFCC_HEADER, b"By=x"))
    got = rewrite_identity_headers(req, ())
    assert got.headers == ((b"host", b"web"),)
    assert type(got.headers) is ParsedHeaders  # a subset of a reader's fields


def test_plain_tuples_stay_plain_so_the_writer_checks_them() -> None:
    """HTTP/2-sourced headers are not a reader's: the writer must still validate them."""
    req = Request(b"GET", b"/", ((b"Host", b"web"),))
    got = rewrite_identity_headers(req, OURS)
    assert type(got.headers) is tuple
    with pytest.raises(LocalProtocolError):
        serialize_request(got)  # uppercase name: caught because the type was not trusted


def test_unvouched_fields_are_not_trusted() -> None:
    got = rewrite_identity_headers(parsed((b"host", b"web")), ((b"x-a", b"1\r\nx: y"),))
    assert type(got.headers) is tuple
    with pytest.raises(LocalProtocolError):
        serialize_request(got)


@pytest.mark.parametrize("field", [(b"X-Upper", b"v"), (b"", b"v"), (b"a b", b"v"),
                                   (b"x-a", b"v\r\nx-b: 1"), (b"x-a", b"\x00"),
                                   (b"x-a", b"\x7f")])
def test_vouched_refuses_what_the_writer_would(field: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="not writable"):
        vouched((field,))
    with pytest.raises(LocalProtocolError):
        serialize_request(Request(b"GET", b"/", (field,)))


_NAME = st.from_regex(rb"[!#$%&'*+\-.^_`|~0-9a-zA-Z]{0,6}", fullmatch=True)


@given(st.lists(st.tuples(_NAME, st.binary(max_size=6)), max_size=4))
def test_vouched_agrees_with_the_writer(pairs: list[tuple[bytes, bytes]]) -> None:
    """Whatever vouched accepts, the writer's own check accepts, byte for byte the same."""
    host = ((b"host", b"web"),)
    try:
        trusted = vouched(tuple(pairs))
    except ValueError:
        return
    checked = Request(b"GET", b"/", host + tuple(pairs))  # the writer's check must pass
    fast = Request(b"GET", b"/", ParsedHeaders(host + trusted))
    assert serialize_request(fast) == serialize_request(checked)


def test_serialized_head_is_the_same_whichever_path_the_writer_took() -> None:
    req = parsed((b"host", b"web"), (b"accept", b"*/*"))
    fast = serialize_request(rewrite_identity_headers(req, OURS))
    slow = serialize_request(Request(req.method, req.target, (*req.headers, *OURS),
                                     req.http_version, req.keep_alive, req.content_length))
    assert fast == slow
    assert b"x-hm-peer-identity: spiffe://cluster.local/ns/shop/sa/client\r\n" in fast
