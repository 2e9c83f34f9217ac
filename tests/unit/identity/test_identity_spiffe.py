"""SpiffeId: strict parsing, exact equality, Istio-style pattern matching for policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.identity.spiffe import InvalidPrincipalPattern, InvalidSpiffeId, SpiffeId

LONG_PATH = "/" + "/".join(["a" * 100] * 21)  # 2121 chars of path: total > 2048

MALFORMED = [
    ("SPIFFE://Example.org/x", "scheme must be lowercase"),
    ("Spiffe://example.org/x", "scheme must be lowercase"),
    ("https://example.org/x", "scheme must be 'spiffe://'"),
    ("spiffe:example.org/x", "missing 'spiffe://' scheme"),
    ("example.org/ns/a/sa/b", "missing 'spiffe://' scheme"),
    ("", "missing 'spiffe://' scheme"),
    ("spiffe://", "trust domain is empty"),
    ("spiffe:///ns/a", "trust domain is empty"),
    ("spiffe://Example.org/x", "uppercase letter ('E')"),
    ("spiffe://ex ample.org/x", "forbidden character (' ')"),
    ("spiffe://example.org:8080/x", "must not contain a port"),
    ("spiffe://user@example.org/x", "must not contain userinfo"),
    ("spiffe://exa+mple.org/x", "forbidden character ('+')"),
    ("spiffe://exämple.org/x", "forbidden character ('ä')"),
    ("spiffe://example.org/x?y", "must not contain a query"),
    ("spiffe://example.org/x#y", "must not contain a fragment"),
    ("spiffe://example.org/a%2Fb", "must not contain percent-encoding"),
    ("spiffe://example.org/%41", "must not contain percent-encoding"),
    ("spiffe://example.org//x", "empty segment"),
    ("spiffe://example.org/ns//sa/x", "empty segment"),
    ("spiffe://example.org/", "must not end with '/'"),
    ("spiffe://example.org/ns/a/", "must not end with '/'"),
    ("spiffe://example.org/ns/../sa/x", "dot segment ('..')"),
    ("spiffe://example.org/./x", "dot segment ('.')"),
    ("spiffe://example.org/x/..", "dot segment ('..')"),
    ("spiffe://example.org/a b", "forbidden character (' ')"),
    ("spiffe://example.org/a:b", "forbidden character (':')"),
    ("spiffe://example.org/a*b", "forbidden character ('*')"),
    ("spiffe://example.org/a\\b", "forbidden character ('\\\\')"),
    ("spiffe://example.org/caf\u00e9", "forbidden character ('é')"),
    ("spiffe://example.org/a\x00", "forbidden character ('\\x00')"),
    ("spiffe://example.org/x\n", "forbidden character ('\\n')"),
    (" spiffe://example.org/x", "scheme must be 'spiffe://'"),
    ("spiffe://" + "a" * 256 + "/x", "trust domain is longer than 255 bytes"),
    ("spiffe://example.org" + LONG_PATH, "longer than 2048 bytes"),
]


@pytest.mark.parametrize(("text", "reason"), MALFORMED, ids=[t[:40] for t, _ in MALFORMED])
def test_malformed_ids_are_rejected_with_their_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(text)
    assert reason in info.value.reason
    assert info.value.text == text


def test_there_are_at_least_twenty_malformed_cases() -> None:
    assert len(MALFORMED) >= 20


@pytest.mark.parametrize("text", [
    "spiffe://example.org",
    "spiffe://example.org/ns/default/sa/web",
    "spiffe://k8s-west.example_1.com/payments/web-fe",
    "spiffe://example.org/9eebccd2-12bf-40a6-b262-65fe0487d453",
    "spiffe://example.org/A.b_C-d/...x/x..",
    "spiffe://" + "a" * 255 + "/x",
])
def test_valid_ids_round_trip_exactly(text: str) -> None:
    assert str(SpiffeId.parse(text)) == text


def test_exactly_2048_bytes_is_accepted() -> None:
    prefix = "spiffe://example.org/"
    text = prefix + "a" * (2048 - len(prefix))
    assert len(text) == 2048
    assert str(SpiffeId.parse(text)) == text


def test_components() -> None:
    sid = SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/web")
    assert (sid.trust_domain, sid.path) == ("cluster.local", "/ns/shop/sa/web")
    assert (sid.namespace, sid.service_account) == ("shop", "web")
    assert sid.segments == ("ns", "shop", "sa", "web")


@pytest.mark.parametrize("text", [
    "spiffe://cluster.local",
    "spiffe://cluster.local/ns/shop",
    "spiffe://cluster.local/ns/shop/sa/web/extra",
    "spiffe://cluster.local/NS/shop/sa/web",
    "spiffe://cluster.local/ns/shop/serviceaccount/web",
])
def test_non_workload_paths_have_no_namespace(text: str) -> None:
    sid = SpiffeId.parse(text)
    assert sid.namespace is None
    assert sid.service_account is None


def test_for_workload_builds_the_canonical_form() -> None:
    sid = SpiffeId.for_workload("cluster.local", "shop", "web")
    assert str(sid) == "spiffe://cluster.local/ns/shop/sa/web"
    assert sid == SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/web")


@pytest.mark.parametrize(("td", "ns", "sa", "reason"), [
    ("Cluster.local", "a", "b", "uppercase"),
    ("cluster.local", "..", "b", "dot segment"),
    ("cluster.local", "a/sa/b", "c", "forbidden character ('/')"),
    ("cluster.local", "a", "b/c", "forbidden character ('/')"),
    ("cluster.local", "", "b", "empty segment"),
    ("cluster.local:80", "a", "b", "port"),
])
def test_for_workload_validates_its_parts(td: str, ns: str, sa: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.for_workload(td, ns, sa)
    assert reason in info.value.reason


def test_direct_construction_validates_too() -> None:
    with pytest.raises(InvalidSpiffeId, match="must start with '/'"):
        SpiffeId("example.org", "ns/a")
    with pytest.raises(InvalidSpiffeId, match="empty"):
        SpiffeId("", "/x")


def test_equality_is_exact_string_equality() -> None:
    a = SpiffeId.parse("spiffe://example.org/ns/a/sa/b")
    assert a == SpiffeId.parse("spiffe://example.org/ns/a/sa/b")
    assert hash(a) == hash(SpiffeId.parse("spiffe://example.org/ns/a/sa/b"))
    # Case differs in the path: a different principal, never folded together.
    assert a != SpiffeId.parse("spiffe://example.org/ns/A/sa/b")
    # A prefix is not the identity.
    assert a != SpiffeId.parse("spiffe://example.org/ns/a/sa/bb")
    assert a != "spiffe://example.org/ns/a/sa/b"  # not equal to a bare string either
    assert len({a, SpiffeId.parse(str(a))}) == 1


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(InvalidSpiffeId, match="not a string"):
        SpiffeId.parse(b"spiffe://example.org/x")  # type: ignore[arg-type]


@pytest.mark.parametrize(("pattern", "expected"), [
    ("*", True),
    ("cluster.local/ns/shop/sa/web", True),
    ("spiffe://cluster.local/ns/shop/sa/web", True),
    ("cluster.local/ns/shop/sa/we", False),
    ("cluster.local/ns/shop/*", True),
    ("spiffe://cluster.local/ns/shop/*", True),
    ("cluster.local/ns/shopping/*", False),
    ("*/sa/web", True),
    ("*/sa/we", False),
    ("cluster.local/ns/shop/sa/WEB", False),
    ("", False),
])
def test_matches_supports_only_leading_or_trailing_star(pattern: str, expected: bool) -> None:
    sid = SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/web")
    assert sid.matches(pattern) is expected


@pytest.mark.parametrize("pattern", ["cluster.local/*/sa/web", "*shop*", "**", "a**"])
def test_matches_rejects_other_wildcards(pattern: str) -> None:
    with pytest.raises(InvalidPrincipalPattern):
        SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/web").matches(pattern)


@given(st.text(max_size=80))
def test_any_text_parses_canonically_or_raises_invalid(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except InvalidSpiffeId:
        return
    assert str(sid) == text


_SEGMENT = st.text("abcXYZ019.-_", min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))


@given(st.text("abc019.-_", min_size=1, max_size=20), st.lists(_SEGMENT, max_size=5))
def test_generated_valid_ids_parse(td: str, segments: list[str]) -> None:
    text = "spiffe://" + td + "".join("/" + s for s in segments)
    sid = SpiffeId.parse(text)
    assert str(sid) == text
    assert sid.segments == tuple(segments)
