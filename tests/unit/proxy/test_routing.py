"""Route table: Gateway API precedence, path/header/method matching, weights, bad input."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridmesh.control.plane import ControlPlane
from hybridmesh.proxy.retry import RetryPolicy
from hybridmesh.proxy.routing import Backend, NoBackendError, RouteAction, RouteTable
from hybridmesh.resources import load_text

DEFAULT_RETRY = RetryPolicy(attempts=2)
SVC = "shop/web"


def rule(
    backend: str,
    *matches: dict[str, Any],
    weight: int = 1,
    retry: dict[str, Any] | None = None,
    timeouts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "matches": list(matches),
        "backends": [{"service": backend, "port": 80, "weight": weight}],
        "timeouts": timeouts or {"requestMs": None, "backendRequestMs": None},
        "retry": retry,
    }


def m(
    path: str = "/",
    kind: str = "PathPrefix",
    *,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    header_kind: str = "Exact",
) -> dict[str, Any]:
    return {
        "path": {"type": kind, "value": path},
        "headers": [
            {"type": header_kind, "name": k, "value": v} for k, v in (headers or {}).items()
        ],
        "method": method,
    }


def route(*rules: dict[str, Any], name: str = "shop/r", port: int | None = None) -> dict[str, Any]:
    return {"name": name, "service": SVC, "port": port, "hostnames": [], "rules": list(rules)}


def table(*routes: dict[str, Any]) -> RouteTable:
    compiled = RouteTable.compile(list(routes), DEFAULT_RETRY)
    assert compiled.errors == ()
    return compiled


def target(
    t: RouteTable,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    port: int = 80,
) -> str:
    """The first backend's service of the action matched for this request."""
    return t.match(SVC, port, method, path, headers or {}).backends[0].service


# -- the control plane's real output ------------------------------------------------------

TOPO = """
apiVersion: hybridmesh.io/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {command: ["srv"], ports: [{containerPort: 8080}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: Service
metadata: {name: web-canary, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: hybridmesh.io/v1alpha1
kind: HTTPRoute
metadata: {name: split, namespace: shop}
spec:
  parentRefs: [{name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: X-Canary, value: "1"}]}]
    backendRefs: [{name: web-canary, port: 80}]
    timeouts: {request: 2s, backendRequest: 500ms}
    retry: {codes: [503], attempts: 3, backoff: 50ms}
  - backendRefs: [{name: web, port: 80, weight: 90}, {name: web-canary, port: 80, weight: 10}]
"""


def test_routes_from_a_control_plane_snapshot() -> None:
    snapshot = ControlPlane(load_text(TOPO, "t.yaml")).snapshot(("pod", "shop/web-0"))
    assert snapshot is not None
    t = RouteTable.compile(snapshot.content["routes"], DEFAULT_RETRY)
    assert t.errors == ()
    canary = t.match(SVC, 80, "GET", "/api/items", {"x-canary": "1"})
    assert canary == RouteAction(
        route="shop/split",
        backends=(Backend("shop/web-canary", 80, 1),),
        request_timeout_s=2.0,
        backend_timeout_s=0.5,
        retry=RetryPolicy(codes=frozenset({503}), attempts=3, backoff_s=0.05),
    )
    split = t.match(SVC, 80, "GET", "/api/items", {})
    assert split.route == "shop/split"
    assert split.retry is DEFAULT_RETRY
    assert split.request_timeout_s is None and split.backend_timeout_s is None
    rng = random.Random(2)
    drawn = Counter(split.choose(rng).service for _ in range(20_000))
    assert drawn["shop/web-canary"] / 20_000 == pytest.approx(0.10, abs=0.01)
    # the route is bound to port 80 only
    assert t.match(SVC, 8443, "GET", "/api/items", {"x-canary": "1"}).route is None


# -- precedence ----------------------------------------------------------------------------


def test_exact_beats_a_prefix_defined_earlier() -> None:
    t = table(route(rule("prefix", m("/a")), rule("exact", m("/a", "Exact"))))
    assert target(t, "/a") == "exact"
    assert target(t, "/a/b") == "prefix"


def test_longer_prefix_wins_over_definition_order() -> None:
    t = table(route(rule("short", m("/api")), rule("long", m("/api/v2"))))
    assert target(t, "/api/v2/items") == "long"
    assert target(t, "/api/v1/items") == "short"


def test_method_match_beats_more_header_matches() -> None:
    """Gateway API (v0.7.1+): method is ranked before the number of header matches."""
    t = table(
        route(rule("headers", m("/x", headers={"a": "1"})), rule("method", m("/x", method="GET")))
    )
    assert target(t, "/x", headers={"a": "1"}) == "method"
    assert target(t, "/x", method="POST", headers={"a": "1"}) == "headers"


def test_more_header_matches_first() -> None:
    t = table(
        route(
            rule("one", m("/x", headers={"a": "1"})),
            rule("two", m("/x", headers={"a": "1", "b": "2"})),
        )
    )
    assert target(t, "/x", headers={"a": "1", "b": "2"}) == "two"
    assert target(t, "/x", headers={"a": "1"}) == "one"
    assert target(t, "/x", headers={"b": "2"}) == SVC  # nothing matched: the default route


def test_ties_go_to_definition_order_across_routes_and_rules() -> None:
    t = table(
        route(rule("first", m("/x")), rule("second", m("/x")), name="shop/a"),
        route(rule("third", m("/x")), name="shop/b"),
    )
    assert target(t, "/x") == "first"
    reordered = table(route(rule("third", m("/x")), name="shop/b"), route(rule("first", m("/x"))))
    assert target(reordered, "/x") == "third"


def test_regular_expression_ranks_between_exact_and_prefix() -> None:
    t = table(
        route(
            rule("catchall", m("/")),
            rule("regex", m("/users/[0-9]+", "RegularExpression")),
            rule("exact", m("/users/0", "Exact")),
        )
    )
    assert target(t, "/users/42") == "regex"
    assert target(t, "/users/0") == "exact"
    assert target(t, "/users/42/orders") == "catchall"  # full match, not search
    assert target(t, "/users/x") == "catchall"


def test_port_bound_and_portless_routes_merge_by_precedence() -> None:
    t = table(
        route(rule("any-port", m("/api/long")), name="shop/any"),
        route(rule("port-80", m("/api")), name="shop/p80", port=80),
    )
    assert target(t, "/api/long") == "any-port"  # longer prefix, from the portless route
    assert target(t, "/api/x") == "port-80"
    assert target(t, "/api/x", port=81) == SVC
    assert target(t, "/api/long", port=81) == "any-port"


# -- matching --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "path", "hit"),
    [
        ("/api", "/api", True),
        ("/api", "/api/", True),
        ("/api", "/api/x/y", True),
        ("/api", "/apix", False),
        ("/api", "/ap", False),
        ("/api", "/", False),
        ("/api/", "/api", True),  # a trailing slash in the prefix is ignored
        ("/api/", "/api/x", True),
        ("/api/", "/apix", False),
        ("/", "/anything/at/all", True),
        ("/", "/", True),
    ],
)
def test_path_prefix_matches_whole_segments(prefix: str, path: str, hit: bool) -> None:
    t = table(route(rule("hit", m(prefix))))
    assert (target(t, path) == "hit") is hit


def test_query_string_is_ignored_for_path_matching() -> None:
    t = table(route(rule("exact", m("/search", "Exact"))))
    assert target(t, "/search?q=1") == "exact"
    assert target(t, "/search/?q=1") == SVC


def test_header_names_are_case_insensitive_values_are_not() -> None:
    t = table(route(rule("hit", m("/", headers={"X-Canary": "Yes"}))))
    assert target(t, "/", headers={"x-canary": "Yes"}) == "hit"
    assert target(t, "/", headers={"X-CANARY": "Yes", "Other": "1"}) == "hit"
    assert target(t, "/", headers={"x-canary": "yes"}) == SVC


def test_header_regular_expression_is_a_full_match() -> None:
    t = table(
        route(
            rule(
                "hit", m("/", headers={"x-user": "[a-z]+-[0-9]+"}, header_kind="RegularExpression")
            )
        )
    )
    assert target(t, "/", headers={"x-user": "bob-7"}) == "hit"
    assert target(t, "/", headers={"x-user": "bob-7!"}) == SVC


def test_method_must_match_exactly() -> None:
    t = table(route(rule("post", m("/", method="POST"))))
    assert target(t, "/", method="POST") == "post"
    assert target(t, "/", method="GET") == SVC


def test_a_rule_with_several_matches_is_an_or() -> None:
    t = table(route(rule("hit", m("/a", "Exact"), m("/b", "Exact"))))
    assert target(t, "/a") == "hit" and target(t, "/b") == "hit"
    assert target(t, "/c") == SVC


def test_a_rule_without_matches_matches_everything() -> None:
    t = table(route({"backends": [{"service": "all", "port": 80, "weight": 1}]}))
    assert target(t, "/whatever") == "all"


def test_no_route_gives_the_default_action_to_the_service_itself() -> None:
    t = table()
    action = t.match("shop/other", 8080, "GET", "/", {})
    assert action == RouteAction(None, (Backend("shop/other", 8080, 1),), None, None, DEFAULT_RETRY)
    assert t.match("shop/other", 8080, "GET", "/x", {}) is action  # cached, not rebuilt


def test_rule_retry_and_timeouts_are_converted() -> None:
    retry = {"codes": [502, 503], "attempts": 1, "backoffMs": 100}
    timeouts = {"requestMs": 0, "backendRequestMs": 250}
    action = table(route(rule("x", m("/"), retry=retry, timeouts=timeouts))).match(
        SVC, 80, "GET", "/", {}
    )
    assert action.retry == RetryPolicy(codes=frozenset({502, 503}), attempts=1, backoff_s=0.1)
    assert action.request_timeout_s == math.inf  # 0 disables the timeout (Gateway API)
    assert action.backend_timeout_s == 0.25


# -- weighted choice ----------------------------------------------------------------------


def action_with(*weights: int) -> RouteAction:
    backends = tuple(Backend(f"b{i}", 80, w) for i, w in enumerate(weights))
    return RouteAction("shop/r", backends, None, None, DEFAULT_RETRY)


def test_weighted_choice_follows_weights_and_zero_is_never_chosen() -> None:
    rng = random.Random(9)
    action = action_with(3, 0, 1, 0)
    drawn = Counter(action.choose(rng).service for _ in range(40_000))
    assert set(drawn) == {"b0", "b2"}
    assert drawn["b0"] / 40_000 == pytest.approx(0.75, abs=0.01)


class EdgeRandom(random.Random):
    """Draws exactly the lowest value ``random()`` can return."""

    def random(self) -> float:
        return 0.0


def test_zero_weight_is_never_chosen_even_at_the_edge_of_the_draw() -> None:
    assert action_with(0, 1, 0).choose(EdgeRandom()).service == "b1"


def test_single_backend_and_all_zero_weights() -> None:
    assert action_with(5).choose(random.Random()).service == "b0"
    with pytest.raises(NoBackendError, match="weight 0"):
        action_with(0, 0).choose(random.Random())
    with pytest.raises(NoBackendError):
        action_with(0).choose(random.Random())


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "shop/bad"},  # no service
        {"name": "shop/bad", "service": SVC, "rules": "nope"},
        {"name": "shop/bad", "service": SVC, "port": "80", "rules": []},
        {"name": "shop/bad", "service": SVC, "rules": [rule("x", m("/(", "RegularExpression"))]},
        {"name": "shop/bad", "service": SVC, "rules": [rule("x", m("/", "Glob"))]},
        {"name": "shop/bad", "service": SVC, "rules": [rule("x", m("nope", "Exact"))]},
        {"name": "shop/bad", "service": SVC, "rules": [rule("x", weight=-1)]},
        {"name": "shop/bad", "service": SVC, "rules": [rule("x", retry={"attempts": -1})]},
        {"name": "shop/bad", "service": SVC, "rules": [rule("x", timeouts={"requestMs": "1s"})]},
        {"name": "shop/bad", "service": SVC, "rules": [rule("x", m("/", headers={"a": None}))]},  # type: ignore[dict-item]
        "not a route",
    ],
)
def test_a_bad_route_is_skipped_whole_and_reported(bad: Any) -> None:
    good = route(rule("good", m("/")), name="shop/good")
    t = RouteTable.compile([bad, good], DEFAULT_RETRY)
    assert len(t.errors) == 1
    assert "shop/bad" in t.errors[0] or "#0" in t.errors[0]
    assert target(t, "/x") == "good"


def test_dump_lists_matches_in_the_order_they_are_tried() -> None:
    t = table(route(rule("short", m("/a")), rule("exact", m("/a/b", "Exact"))))
    dump = t.dump()
    assert list(dump) == ["shop/web:*"]
    assert [e["path"] for e in dump["shop/web:*"]] == [
        {"type": "Exact", "value": "/a/b"},
        {"type": "PathPrefix", "value": "/a"},
    ]


# -- never raises ---------------------------------------------------------------------------

FUZZ_TABLE = RouteTable.compile(
    [
        route(
            rule("a", m("/api", headers={"x-a": "1"})),
            rule("b", m("/api/v[0-9]+/.*", "RegularExpression", method="POST")),
            rule(
                "c",
                m("/exact", "Exact", headers={"x-re": "^a.*z$"}, header_kind="RegularExpression"),
            ),
            rule("d", m("/")),
        ),
        route(rule("e", m("/p")), name="shop/p", port=80),
    ],
    DEFAULT_RETRY,
)


@settings(max_examples=300, deadline=None)
@given(
    service=st.sampled_from([SVC, "shop/none", ""]),
    port=st.integers(min_value=0, max_value=65535),
    method=st.text(max_size=8),
    path=st.text(max_size=64),
    headers=st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=6),
)
def test_match_never_raises(
    service: str, port: int, method: str, path: str, headers: dict[str, str]
) -> None:
    action = FUZZ_TABLE.match(service, port, method, path, headers)
    assert action.backends


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ROUTE_KEYS = st.fixed_dictionaries(
    {},
    optional={
        "name": JSON,
        "service": st.just(SVC) | JSON,
        "port": JSON,
        "rules": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "matches": st.lists(
                        st.dictionaries(st.sampled_from(["path", "headers", "method"]), JSON)
                    )
                    | JSON,
                    "backends": JSON,
                    "timeouts": JSON,
                    "retry": JSON,
                },
            ),
            max_size=3,
        )
        | JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(routes=st.lists(ROUTE_KEYS | JSON, max_size=4))
def test_compile_never_raises_on_malformed_json(routes: list[Any]) -> None:
    t = RouteTable.compile(routes, DEFAULT_RETRY)
    assert all(isinstance(e, str) for e in t.errors)
    t.match(SVC, 80, "GET", "/", {})
