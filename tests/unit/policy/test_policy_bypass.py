"""Path bypass attempts against a DENY on ``/admin`` and an ALLOW of only ``/public/*``.

Every attempt must end as 400 (normalization refuses it) or as a deny under BOTH policies:
zero allowed. Then a Hypothesis property checks the same promise against independent models
of how backends read a path (Tomcat, decode-first, Express, Windows), on paths assembled from
the pieces bypasses are made of.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from policy_fixtures import CLIENT, decide, http, policy, to

from hybridmesh.policy import BadPath

DENY_ADMIN = [policy("deny-admin", "DENY", [to(paths=["/admin"])])]
ALLOW_PUBLIC = [policy("public-only", "ALLOW", [to(paths=["/public/*"])])]

# (attempt, outcome): "400" = refused by normalization, "deny" = denied by both policies.
ATTEMPTS = [
    ("/admin", "deny"),
    ("/admin/../admin", "deny"),
    ("/public/../admin", "deny"),
    ("/public/..%2Fadmin", "400"),
    ("/public/%2e%2e/admin", "deny"),
    ("/public/%2E%2E/admin", "deny"),
    ("/%61dmin", "deny"),
    ("/ad%6Din", "deny"),
    ("//admin", "deny"),
    ("/./admin", "deny"),
    ("/./././admin", "deny"),
    ("/admin/", "deny"),
    ("/admin/.", "deny"),
    ("/admin/x/..", "deny"),
    ("/admin;x", "deny"),
    ("/admin;x/", "deny"),
    ("/admin;x=1;y=2", "deny"),
    ("/;x/admin", "deny"),
    ("/admin%3Bx", "deny"),
    ("/admin#x", "deny"),
    ("/admin?x", "deny"),
    ("/admin?x#y", "deny"),
    ("/admin%00", "400"),
    ("/admin%09", "400"),
    ("/admin\t", "400"),
    ("/admin%2F", "400"),
    ("/admin%2f", "400"),
    ("/admin%5C", "400"),
    ("/admin%5c", "400"),
    ("/admin%252F", "400"),
    ("/admin%2520", "400"),
    ("/ADMIN", "deny"),
    ("/Admin", "deny"),
    ("/aDmIn;x/", "deny"),
    ("\\admin", "400"),
    ("/public/..\\admin", "400"),
    ("/admin%20", "deny"),
    ("/admin.", "deny"),
    ("/admin%2e", "deny"),
    ("/public/%2e%2e%2fadmin", "400"),
    ("/%2fadmin", "400"),
    ("/public/./../admin", "deny"),
    ("/public//../admin", "deny"),
    ("/public/x/../../admin", "deny"),
    ("/../admin", "deny"),
    ("/%2e%2e/admin", "deny"),
    ("/public/..;/admin", "400"),
    ("/public/..;x/admin", "400"),
    ("/public/..%3B/admin", "400"),
    ("/public/.../admin", "400"),
    ("/public/.%20/admin", "400"),
    ("/public/%C0%AE%C0%AE/admin", "400"),
    ("/public/%u002e%u002e/admin", "400"),
    ("/admin%ff", "400"),
    ("/admín", "400"),
    ("/admin\x00", "400"),
    ("http://web/admin", "400"),
    ("*", "400"),
    ("admin", "400"),
]


@pytest.mark.parametrize(("attempt", "outcome"), ATTEMPTS, ids=[a for a, _ in ATTEMPTS])
def test_bypass_attempt_is_refused_or_denied(attempt: str, outcome: str) -> None:
    if outcome == "400":
        with pytest.raises(BadPath) as caught:
            http(attempt)
        assert caught.value.status == 400
        return
    request = http(attempt)
    for policies in (DENY_ADMIN, ALLOW_PUBLIC):
        decision = decide(policies, request)
        assert not decision.allowed, (attempt, policies[0]["metadata"]["name"], decision)


def test_the_table_is_big_enough_and_allows_nothing() -> None:
    assert len(ATTEMPTS) >= 30
    assert {outcome for _, outcome in ATTEMPTS} == {"400", "deny"}


@pytest.mark.parametrize(
    "path", ["/public/", "/public/index.html", "/public/a;v=1", "/public/%C3%A9"]
)
def test_legitimate_requests_still_pass(path: str) -> None:
    """The controls: a table of denials means nothing if everything is denied."""
    assert decide(DENY_ADMIN, http(path)).allowed
    assert decide(ALLOW_PUBLIC, http(path)).allowed


@pytest.mark.parametrize("path", ["/administrator", "/admin/x", "/Admin/x", "/x/admin"])
def test_deny_on_exact_admin_is_not_a_prefix_rule(path: str) -> None:
    assert decide(DENY_ADMIN, http(path)).allowed


def test_upper_case_is_forwarded_as_sent_and_denied_only_as_a_maybe() -> None:
    """What we guarantee for ``/ADMIN``: never rewritten to ``/admin`` (a case-sensitive
    backend serves a different resource), and denied by the DENY because a case-insensitive
    backend (Express, ASP.NET, IIS) would serve ``/admin``."""
    request = http("/ADMIN")
    assert request.path is not None
    assert request.path.target == "/ADMIN"
    decision = decide(DENY_ADMIN, request)
    assert (decision.allowed, decision.action) == (False, "DENY")
    assert "may match" in decision.reason and "case" in decision.reason


@pytest.mark.parametrize(
    ("attempt", "forwarded"),
    [
        ("/public/../admin", "/admin"),
        ("/%61dmin", "/admin"),
        ("/admin;x/", "/admin;x/"),
        ("/admin#x", "/admin"),
        ("/admin?x", "/admin?x"),
        ("/a/%c3%a9", "/a/%C3%A9"),
    ],
)
def test_forwarded_target_is_the_matched_one(attempt: str, forwarded: str) -> None:
    request = http(attempt)
    assert request.path is not None and request.path.target == forwarded


# -- independent models of backends -------------------------------------------------------

PIECES = [
    "/",
    "//",
    "admin",
    "ADMIN",
    "Admin",
    "public",
    "x",
    ".",
    "..",
    "./",
    "../",
    "%2e",
    "%2E",
    "%2e%2e",
    ";",
    ";x",
    "%3b",
    "%3B",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    "%25",
    "%32%46",
    "%61",
    "%41",
    "%20",
    " ",
    "%00",
    "?",
    "#",
    "%C0%AE",
    "%c3%a9",
    "~",
    "%7e",
    "%6D",
    "%",
    "...",
]


def _dots(path: str) -> str:
    """RFC 3986 dot-segment removal and slash merging, the way most servers do it."""
    merged = re.sub("/+", "/", path)
    resolved = posixpath.normpath(merged) if merged else "/"
    return resolved + ("/" if merged.endswith("/") and resolved != "/" else "")


def _strip_params(path: str) -> str:
    return "/".join(segment.split(";")[0] for segment in path.split("/"))


def backend_views(target: str) -> set[str]:
    """What a few real backend families would route the forwarded target to."""
    path = target.split("?", maxsplit=1)[0]
    tomcat = _dots(unquote(_strip_params(path)))
    decode_first = _dots(_strip_params(unquote(path, errors="replace")))
    express = decode_first.lower().rstrip("/") or "/"
    windows = "/".join(s.rstrip(". ") for s in decode_first.replace("\\", "/").split("/"))
    return {path, tomcat, decode_first, express, windows.lower().rstrip("/") or "/"}


def _serves_admin(view: str) -> bool:
    return view.lower().rstrip("/") == "/admin"


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join))
@example("/public/..;/admin")
@example("/ADMIN/")
def test_no_backend_reading_reaches_admin_through_the_deny(raw: str) -> None:
    target = raw if raw.startswith("/") else "/" + raw
    try:
        request = http(target)
    except BadPath:
        return
    assert request.path is not None
    views = backend_views(request.path.target)
    if any(_serves_admin(view) for view in views):
        assert not decide(DENY_ADMIN, request).allowed, (target, request.path, views)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.sampled_from([*PIECES, "public/", "/public/"]), min_size=1, max_size=8).map("".join)
)
@example("/public/..%3B/admin")
def test_what_allow_public_lets_through_stays_under_public(raw: str) -> None:
    target = raw if raw.startswith("/") else "/" + raw
    try:
        request = http(target)
    except BadPath:
        return
    assert request.path is not None
    if decide(ALLOW_PUBLIC, request).allowed:
        for view in backend_views(request.path.target):
            # "/public" itself is the directory /public/ read without its slash
            assert (view.rstrip("/") + "/").startswith("/public/"), (target, request.path, view)


def test_the_backend_models_can_see_a_bypass() -> None:
    """Guard: without normalization, the models do reach /admin from these targets."""
    assert _serves_admin(_dots(unquote(_strip_params("/public/..;/admin"))))
    assert any(_serves_admin(v) for v in backend_views("/ADMIN/"))
    assert CLIENT.namespace == "shop"
