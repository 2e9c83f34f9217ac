"""Hypothesis over random policies and requests: decide is total, consistent, monotone, and the
L4 projection agrees with the engine on every TCP connection."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from policy_fixtures import CLIENT, FOREIGN, OTHER, STRANGER, TD, policy

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.policy import (
    ROOT_NAMESPACE,
    BadRequest,
    RequestAttributes,
    Target,
    compile_policies,
    l4_policy,
    load_policies,
)

VALUES: dict[str, list[str]] = {
    "principals": [
        str(CLIENT),
        str(OTHER),
        "*",
        "*/sa/client",
        "spiffe://cluster.local/ns/shop/*",
        str(FOREIGN),
        "spiffe://evil.org/*",
    ],
    "namespaces": ["shop", "elsewhere", "*", "sh*"],
    "serviceAccounts": ["shop/client", "shop/other"],
    "ports": ["8080", "9090"],
    "methods": ["GET", "POST", "*", "G*"],
    "paths": ["/admin", "/public/*", "*.json", "*", "/a%20b", "/ADMIN", "/admin/*"],
    "hosts": ["web.shop", "*.shop", "*", "WEB.shop."],
}
SOURCE_FIELDS = ["principals", "namespaces", "serviceAccounts"]
OPERATION_FIELDS = ["ports", "methods", "paths", "hosts"]


def _fields(names: list[str]) -> st.SearchStrategy[dict[str, list[str]]]:
    keys = [*names, *(f"not{n[0].upper()}{n[1:]}" for n in names)]

    def values(key: str) -> st.SearchStrategy[list[str]]:
        base = key[3].lower() + key[4:] if key.startswith("not") else key
        return st.lists(st.sampled_from(VALUES[base]), min_size=1, max_size=2, unique=True)

    return st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({k: values(k) for k in chosen})
    )


RULES = st.lists(
    st.fixed_dictionaries(
        {
            "from": st.lists(_fields(SOURCE_FIELDS).map(lambda s: {"source": s}), max_size=2),
            "to": st.lists(_fields(OPERATION_FIELDS).map(lambda o: {"operation": o}), max_size=2),
        }
    ),
    max_size=3,
)
SCOPES: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
    [
        {},
        {"selector": {"matchLabels": {"app": "web"}}},
        {"selector": {"matchLabels": {"app": "db"}}},
        {"targetRefs": [{"name": "web"}]},
        {"targetRefs": [{"name": "canary"}]},
    ]
)


@st.composite
def policies(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 4))
    return [
        policy(
            f"p{i}",
            draw(st.sampled_from(["ALLOW", "DENY"])),
            draw(RULES),
            draw(st.sampled_from(["shop", "elsewhere", ROOT_NAMESPACE])),
            **draw(SCOPES),
        )
        for i in range(count)
    ]


PEERS = st.sampled_from(
    [CLIENT, OTHER, STRANGER, FOREIGN, None, SpiffeId.parse("spiffe://cluster.local/gateway")]
)
PATHS = st.lists(
    st.sampled_from(
        ["/", "admin", "ADMIN", "public", "..", "%2e", ";x", "%20", "a.json", "%2F", "x", "."]
    ),
    max_size=5,
).map(lambda parts: "/" + "".join(parts))
TARGETS = st.sampled_from(
    [
        Target("shop", {"app": "web"}, frozenset({"shop/web", "shop/canary"}), "shop/web"),
        Target("shop", {"app": "web"}, frozenset({"shop/web", "shop/canary"}), "shop/canary"),
        Target("shop", {"app": "web"}, frozenset({"shop/web"})),
        Target("elsewhere", {"app": "db"}),
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> RequestAttributes | None:
    peer, port = draw(PEERS), draw(st.sampled_from([8080, 9090]))
    if draw(st.booleans()):
        return RequestAttributes.tcp(peer, port)
    method = draw(st.sampled_from(["GET", "get", "HEAD", "POST", "DELETE"]))
    host = draw(st.sampled_from([None, "web.shop", "WEB.shop.:80", "x.shop"]))
    try:
        return RequestAttributes.http(peer, port, method, draw(PATHS), host)
    except BadRequest:
        return None


@settings(max_examples=300, deadline=None)
@given(policies(), TARGETS, requests())
def test_decide_is_total_and_consistent(
    raw: list[dict[str, Any]], target: Target, request: RequestAttributes | None
) -> None:
    if request is None:
        return
    decision = compile_policies(raw, target, trust_domain=TD).decide(request)
    assert decision.reason
    assert (decision.policy is None) == (decision.action is None) == (decision.rule is None)
    if decision.action == "DENY":
        assert not decision.allowed
    if decision.action == "ALLOW":
        assert decision.allowed


@settings(max_examples=250, deadline=None)
@given(policies(), policies(), TARGETS, requests())
def test_adding_deny_policies_never_allows_more(
    raw: list[dict[str, Any]],
    extra: list[dict[str, Any]],
    target: Target,
    request: RequestAttributes | None,
) -> None:
    if request is None:
        return
    denies = [
        {
            **p,
            "metadata": {**p["metadata"], "name": "x" + p["metadata"]["name"]},
            "spec": {**p["spec"], "action": "DENY"},
        }
        for p in extra
    ]
    before = compile_policies(raw, target, trust_domain=TD).decide(request)
    after = compile_policies(raw + denies, target, trust_domain=TD).decide(request)
    assert before.allowed or not after.allowed


@settings(max_examples=300, deadline=None)
@given(policies(), TARGETS, PEERS, st.sampled_from([8080, 9090]))
def test_l4_projection_decides_connections_like_the_engine(
    raw: list[dict[str, Any]], target: Target, peer: SpiffeId | None, port: int
) -> None:
    projected = [l4_policy(p).model_dump(mode="json", by_alias=True) for p in load_policies(raw)]
    for dumped in projected:
        for rule in dumped["spec"]["rules"]:
            for item in rule["to"]:
                assert not any(
                    item["operation"][f]
                    for f in ("paths", "methods", "hosts", "notPaths", "notMethods", "notHosts")
                )
    request = RequestAttributes.tcp(peer, port)
    full = compile_policies(raw, target, trust_domain=TD).decide(request)
    l4 = compile_policies(projected, target, trust_domain=TD).decide(request)
    assert full.allowed == l4.allowed
