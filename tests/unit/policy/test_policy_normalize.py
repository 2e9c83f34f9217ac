"""Request-target and Host normalization: exact outputs, refusals, and Hypothesis invariants."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridmesh.policy import BadHost, BadPath, BadRequest, normalize_host, normalize_path

PIECES = [
    "/",
    "//",
    "a",
    "B",
    ".",
    "..",
    "%2e",
    "%2E",
    ";",
    ";p=1",
    "%3B",
    "%2f",
    "%5C",
    "\\",
    "%25",
    "%41",
    "%7e",
    "%20",
    "%00",
    "?",
    "#",
    "%C3%A9",
    "%e9",
    "%",
    "%z",
    "~",
    "...",
]


@pytest.mark.parametrize(
    ("target", "path", "query", "match_path", "decoded_path"),
    [
        ("/", "/", None, "/", "/"),
        ("//", "/", None, "/", "/"),
        ("/a//b///c/", "/a/b/c/", None, "/a/b/c/", "/a/b/c/"),
        ("/a/b/../c", "/a/c", None, "/a/c", "/a/c"),
        ("/a/./b/.", "/a/b/", None, "/a/b/", "/a/b/"),
        ("/a/..", "/", None, "/", "/"),
        ("/../../a", "/a", None, "/a", "/a"),
        ("/%41%62%2d%5F%7e", "/Ab-_~", None, "/Ab-_~", "/Ab-_~"),
        ("/a%3ab", "/a%3Ab", None, "/a%3Ab", "/a:b"),
        ("/caf%c3%a9", "/caf%C3%A9", None, "/caf%C3%A9", "/café"),
        ("/a;v=1/b;w", "/a;v=1/b;w", None, "/a/b", "/a/b"),
        ("/;p/a", "/;p/a", None, "/a", "/a"),
        ("/a%3Bp", "/a%3Bp", None, "/a%3Bp", "/a"),
        ("/a?b=1&c=%2F#frag", "/a", "b=1&c=%2F", "/a", "/a"),
        ("/a?", "/a", "", "/a", "/a"),
        ("/a#x?y", "/a", None, "/a", "/a"),
        ("/100%25", "/100%25", None, "/100%25", "/100%"),
        ("/A/B", "/A/B", None, "/A/B", "/A/B"),
    ],
)
def test_normalized_forms(
    target: str, path: str, query: str | None, match_path: str, decoded_path: str
) -> None:
    result = normalize_path(target)
    assert (result.path, result.query, result.match_path, result.decoded_path) == (
        path,
        query,
        match_path,
        decoded_path,
    )
    assert result.target == path + ("" if query is None else f"?{query}")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("", "origin-form"),
        ("a/b", "origin-form"),
        ("*", "asterisk-form"),
        ("http://h/a", "absolute-form"),
        ("/a b", "space"),
        ("/a\r\nX: y", "control"),
        ("/a\x7f", "control"),
        ("/é", "non-ASCII"),
        ("/a\\b", "'\\'"),
        ("/a%2Fb", "encoded '/'"),
        ("/a%5cb", "encoded '\\'"),
        ("/a%00", "NUL"),
        ("/a%0d%0a", "control"),
        ("/a%zz", "invalid percent-encoding"),
        ("/a%4", "invalid percent-encoding"),
        ("/a%", "invalid percent-encoding"),
        ("/a%252F", "double percent-encoding"),
        ("/a%25%34%31", "double percent-encoding"),
        ("/a%ff", "UTF-8"),
        ("/a%C0%AE", "UTF-8"),
        ("/a/..;/b", "dot-segment with parameters"),
        ("/a/.;x/b", "dot-segment with parameters"),
        ("/a/%2e%2e%3Bx/b", "dot-segment with parameters"),
        ("/a/.../b", "only dots and spaces"),
        ("/a/..%20/b", "only dots and spaces"),
        ('/a/b"', "not allowed raw"),
        ("/a<b>", "not allowed raw"),
        ("/a{b}", "not allowed raw"),
    ],
)
def test_refused(target: str, reason: str) -> None:
    with pytest.raises(BadPath) as caught:
        normalize_path(target)
    assert reason in caught.value.reason
    assert caught.value.status == 400
    assert isinstance(caught.value, BadRequest)


def test_bytes_are_accepted_and_raw_high_bytes_refused() -> None:
    assert normalize_path(b"/a/../b").path == "/b"
    with pytest.raises(BadPath, match="non-ASCII"):
        normalize_path(b"/a\xff")


def test_escape_hex_case_and_unreserved_decoding_are_canonical() -> None:
    assert normalize_path("/%7e%7E%c3%A9").path == "/~~%C3%A9"


@pytest.mark.parametrize(
    ("host", "normalized"),
    [
        ("web", "web"),
        ("Web.Shop.SVC.cluster.local", "web.shop.svc.cluster.local"),
        ("web.shop:8080", "web.shop"),
        ("web.shop.", "web.shop"),
        ("web.shop.:80", "web.shop"),
        ("web:", "web"),
        ("10.0.0.1:80", "10.0.0.1"),
        ("[::1]:8080", "[::1]"),
        ("[FE80::1]", "[fe80::1]"),
        (b"WEB", "web"),
    ],
)
def test_hosts(host: str | bytes, normalized: str) -> None:
    assert normalize_host(host) == normalized


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "web..shop",
        ".web",
        "web.shop..",
        "a:b",
        "a:123456",
        "a b",
        "a/b",
        "u@h",
        "[::1",
        "[::1]x",
        "[]",
        "[g::]",
        "wéb",
        "a\x00",
    ],
)
def test_bad_hosts(host: str) -> None:
    with pytest.raises(BadHost):
        normalize_host(host)


TARGETS = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(PIECES), max_size=10).map(lambda p: "/" + "".join(p)),
)


@settings(max_examples=3000, deadline=None)
@given(TARGETS)
def test_normalize_is_idempotent_and_raises_only_bad_path(target: str) -> None:
    try:
        once = normalize_path(target)
    except BadPath:
        return
    twice = normalize_path(once.target)
    assert twice == once
    assert "//" not in once.path and "/./" not in once.path and "/../" not in once.path
    assert not once.path.endswith(("/.", "/.."))


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40))
def test_bytes_never_raise_anything_but_bad_path(target: bytes) -> None:
    with contextlib.suppress(BadPath):
        normalize_path(target)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=30))
def test_normalize_host_is_idempotent_and_raises_only_bad_host(host: str) -> None:
    try:
        once = normalize_host(host)
    except BadHost:
        return
    assert normalize_host(once) == once
