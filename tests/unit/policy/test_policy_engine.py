"""Evaluation semantics: precedence, default-deny, identities, notX, TCP, hosts, methods."""

from __future__ import annotations

import pytest
from policy_fixtures import (
    CLIENT,
    FOREIGN,
    OTHER,
    STRANGER,
    TD,
    WEB,
    decide,
    http,
    policy,
    source,
    tcp,
    to,
)

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.policy import PolicyError, Target, compile_policies

ALLOW_CLIENT = policy("allow-client", "ALLOW", [{"from": [source(principals=[str(CLIENT)])]}])


# -- precedence ---------------------------------------------------------------------------


def test_no_policy_allows() -> None:
    decision = decide([], http("/anything"))
    assert decision.allowed and decision.policy is None and decision.action is None
    assert "no policy" in decision.reason


def test_deny_wins_over_a_matching_allow() -> None:
    policies = [ALLOW_CLIENT, policy("deny-admin", "DENY", [to(paths=["/admin"])])]
    denied = decide(policies, http("/admin"))
    assert (denied.allowed, denied.policy, denied.action, denied.rule) == (
        False,
        "shop/deny-admin",
        "DENY",
        0,
    )
    allowed = decide(policies, http("/home"))
    assert (allowed.allowed, allowed.policy, allowed.action) == (True, "shop/allow-client", "ALLOW")


def test_any_allow_makes_the_workload_default_deny() -> None:
    decision = decide([ALLOW_CLIENT], http("/", principal=OTHER))
    assert not decision.allowed
    assert decision.policy is None and "default-deny" in decision.reason
    assert "shop/allow-client" in decision.reason


def test_allow_without_rules_allows_nothing_and_deny_without_rules_denies_nothing() -> None:
    assert not decide([policy("empty", "ALLOW")], http("/")).allowed
    assert decide([policy("empty", "DENY")], http("/")).allowed


def test_an_empty_rule_matches_everything() -> None:
    assert decide([policy("all", "ALLOW", [{}])], http("/", principal=None)).allowed
    assert not decide([policy("none", "DENY", [{}])], tcp()).allowed


def test_the_deciding_rule_index_is_reported() -> None:
    rules = [to(paths=["/a"]), to(paths=["/b"])]
    decision = decide([policy("two", "ALLOW", rules)], http("/b"))
    assert (decision.allowed, decision.rule) == (True, 1)
    assert decision.to_json() == {
        "allowed": True,
        "policy": "shop/two",
        "action": "ALLOW",
        "rule": 1,
        "reason": "ALLOW shop/two rule 1 matches",
    }


def test_from_and_to_must_both_match() -> None:
    rule = {"from": [source(principals=[str(CLIENT)])], "to": [{"operation": {"methods": ["GET"]}}]}
    policies = [policy("p", "ALLOW", [rule])]
    assert decide(policies, http("/", "GET")).allowed
    assert not decide(policies, http("/", "POST")).allowed
    assert not decide(policies, http("/", "GET", principal=OTHER)).allowed


# -- principals and trust domains ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "client", "other", "stranger"),
    [
        (str(CLIENT), True, False, False),
        ("spiffe://cluster.local/ns/shop/*", True, True, False),
        ("*/sa/client", True, False, True),
        ("*", True, True, True),
        ("spiffe://cluster.local/ns/shop/sa/clien", False, False, False),
    ],
)
def test_principal_patterns(pattern: str, client: bool, other: bool, stranger: bool) -> None:
    policies = [policy("p", "ALLOW", [{"from": [source(principals=[pattern])]}])]
    assert [
        decide(policies, http("/", principal=peer)).allowed for peer in (CLIENT, OTHER, STRANGER)
    ] == [client, other, stranger]


@pytest.mark.parametrize(
    "fields",
    [
        {"principals": [str(CLIENT)]},
        {"principals": ["*"]},
        {"principals": ["*/ns/shop/sa/client"]},
        {"namespaces": ["shop"]},
        {"namespaces": ["*"]},
        {"serviceAccounts": ["shop/client"]},
        {"notNamespaces": ["elsewhere"]},
    ],
)
def test_a_foreign_trust_domain_is_never_allowed_by_local_rules(
    fields: dict[str, list[str]],
) -> None:
    """spiffe://evil.org/ns/shop/sa/client has the same path as our client: it proves nothing."""
    policies = [policy("p", "ALLOW", [{"from": [source(**fields)]}])]
    assert decide(policies, http("/", principal=CLIENT)).allowed
    assert not decide(policies, http("/", principal=FOREIGN)).allowed


def test_a_foreign_principal_is_proven_not_to_be_a_local_one() -> None:
    """Exclusions by principal are exact facts: evil.org's client is surely not shop/other."""
    policies = [policy("p", "ALLOW", [{"from": [source(notPrincipals=[str(OTHER)])]}])]
    assert decide(policies, http("/", principal=FOREIGN)).allowed
    assert not decide(policies, http("/", principal=None)).allowed


def test_a_foreign_principal_spelled_out_is_matched() -> None:
    """Federation stays possible: a pattern that names the other trust domain means it."""
    for pattern in (str(FOREIGN), "spiffe://evil.org/ns/*"):
        policies = [policy("p", "ALLOW", [{"from": [source(principals=[pattern])]}])]
        assert decide(policies, http("/", principal=FOREIGN)).allowed
    prefix = [policy("p", "ALLOW", [{"from": [source(principals=["spiffe://evil*"])]}])]
    assert not decide(prefix, http("/", principal=FOREIGN)).allowed


@pytest.mark.parametrize(
    "fields",
    [
        {"namespaces": ["other"]},
        {"principals": ["*"]},
        {"notNamespaces": ["shop"]},
        {"serviceAccounts": ["x/y"]},
    ],
)
def test_deny_rules_treat_a_foreign_peer_as_possibly_anyone(fields: dict[str, list[str]]) -> None:
    policies = [policy("d", "DENY", [{"from": [source(**fields)]}])]
    decision = decide(policies, http("/", principal=FOREIGN))
    assert not decision.allowed and "trust domain" in decision.reason


def test_plaintext_peers() -> None:
    deny_unauthenticated = [policy("d", "DENY", [{"from": [source(notPrincipals=["*"])]}])]
    assert not decide(deny_unauthenticated, http("/", principal=None)).allowed
    assert decide(deny_unauthenticated, http("/", principal=CLIENT)).allowed
    deny_authenticated = [policy("d", "DENY", [{"from": [source(principals=["*"])]}])]
    assert decide(deny_authenticated, http("/", principal=None)).allowed
    assert not decide(deny_authenticated, http("/", principal=CLIENT)).allowed
    allow_any_identity = [policy("a", "ALLOW", [{"from": [source(principals=["*"])]}])]
    assert not decide(allow_any_identity, http("/", principal=None)).allowed


def test_plaintext_cannot_dodge_a_deny_by_namespace() -> None:
    """Stricter than Istio: without an identity the peer may be in the denied namespace."""
    policies = [policy("d", "DENY", [{"from": [source(namespaces=["elsewhere"])]}])]
    decision = decide(policies, http("/", principal=None))
    assert not decision.allowed and "plaintext" in decision.reason
    assert decide(policies, http("/", principal=CLIENT)).allowed
    assert not decide(policies, http("/", principal=STRANGER)).allowed


def test_namespace_and_service_account_come_only_from_workload_shaped_ids() -> None:
    gateway = SpiffeId.parse("spiffe://cluster.local/gateway")
    policies = [policy("p", "ALLOW", [{"from": [source(namespaces=["*"])]}])]
    assert not decide(policies, http("/", principal=gateway)).allowed
    assert decide(policies, http("/", principal=CLIENT)).allowed


# -- notX fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "allowed_for", "denied_for"),
    [
        ({"from": [source(notPrincipals=[str(OTHER)])]}, http("/"), http("/", principal=OTHER)),
        ({"from": [source(notNamespaces=["elsewhere"])]}, http("/"), http("/", principal=STRANGER)),
        (
            {"from": [source(notServiceAccounts=["shop/other"])]},
            http("/"),
            http("/", principal=OTHER),
        ),
        (to(notPorts=["9090"]), http("/"), http("/", port=9090)),
        (to(notMethods=["DELETE"]), http("/"), http("/", "DELETE")),
        (to(notPaths=["/private/*"]), http("/public"), http("/private/x")),
        (to(notHosts=["admin.shop"]), http("/"), http("/", host="ADMIN.shop.:80")),
    ],
)
def test_not_fields_exclude(rule: dict, allowed_for: object, denied_for: object) -> None:  # type: ignore[type-arg]
    policies = [policy("p", "ALLOW", [rule])]
    assert decide(policies, allowed_for).allowed  # type: ignore[arg-type]
    assert not decide(policies, denied_for).allowed  # type: ignore[arg-type]


def test_not_paths_in_a_deny_fails_closed_on_a_maybe() -> None:
    """DENY everything but /health: /HEALTH only *may* be /health, so it is denied."""
    policies = [policy("d", "DENY", [to(notPaths=["/health"])])]
    assert decide(policies, http("/health")).allowed
    assert not decide(policies, http("/HEALTH")).allowed
    assert not decide(policies, http("/x")).allowed


# -- TCP ----------------------------------------------------------------------------------------


def test_tcp_cannot_match_an_allow_rule_that_needs_http_fields() -> None:
    for operation in (
        {"paths": ["/*"]},
        {"methods": ["GET"]},
        {"hosts": ["*"]},
        {"notMethods": ["DELETE"]},
        {"ports": ["8080"], "paths": ["*"]},
    ):
        decision = decide([policy("p", "ALLOW", [to(**operation)])], tcp())
        assert not decision.allowed, operation
        assert "TCP" in decision.reason


def test_tcp_matches_an_allow_rule_on_ports_and_identities() -> None:
    policies = [
        policy(
            "p",
            "ALLOW",
            [
                {
                    "from": [source(principals=[str(CLIENT)])],
                    "to": [{"operation": {"ports": ["8080"]}}],
                }
            ],
        )
    ]
    assert decide(policies, tcp()).allowed
    assert not decide(policies, tcp(port=9090)).allowed
    assert not decide(policies, tcp(OTHER)).allowed


def test_tcp_deny_ignores_http_fields_and_fails_closed() -> None:
    policies = [policy("d", "DENY", [to(ports=["8080"], methods=["POST"])])]
    decision = decide(policies, tcp())
    assert (decision.allowed, decision.policy) == (False, "shop/d")
    assert "cannot be seen on a TCP connection" in decision.reason
    assert decide(policies, tcp(port=9090)).allowed
    assert decide(policies, http("/", "GET")).allowed
    assert not decide(policies, http("/", "POST")).allowed


# -- hosts, methods, ports ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "allowed"),
    [
        ("web.shop.svc.cluster.local", "WEB.Shop.svc.cluster.local.:80", True),
        ("Web.Shop.", "web.shop", True),
        ("web.shop:80", "web.shop:8080", True),
        ("*.shop.svc.cluster.local", "web.shop.svc.cluster.local", True),
        ("*.shop.svc.cluster.local", "web.other.svc.cluster.local", False),
        ("web.*", "web.shop", True),
        ("web.shop", "web.shop.evil.org", False),
        ("web.shop", None, False),
    ],
)
def test_hosts(pattern: str, host: str | None, allowed: bool) -> None:
    policies = [policy("p", "ALLOW", [to(hosts=[pattern])])]
    assert decide(policies, http("/", host=host)).allowed is allowed


def test_a_missing_host_is_denied_by_a_deny_on_hosts() -> None:
    policies = [policy("d", "DENY", [to(hosts=["admin.shop"])])]
    assert not decide(policies, http("/", host=None)).allowed
    assert decide(policies, http("/", host="web.shop")).allowed


def test_methods_are_case_sensitive_but_deny_covers_other_readings() -> None:
    allow_get = [policy("p", "ALLOW", [to(methods=["GET"])])]
    assert decide(allow_get, http("/", "GET")).allowed
    assert not decide(allow_get, http("/", "get")).allowed
    assert not decide(allow_get, http("/", "HEAD")).allowed
    deny_get = [policy("d", "DENY", [to(methods=["GET"])])]
    assert not decide(deny_get, http("/", "get")).allowed
    assert not decide(deny_get, http("/", "HEAD")).allowed
    assert decide(deny_get, http("/", "POST")).allowed


def test_ports_are_the_destination_workload_port() -> None:
    policies = [policy("p", "ALLOW", [to(ports=["8080"])])]
    assert decide(policies, http("/", port=8080)).allowed
    assert not decide(policies, http("/", port=80)).allowed


@pytest.mark.parametrize(
    ("pattern", "path", "allowed"),
    [
        ("*", "/x", True),
        ("/api/*", "/api/v1", True),
        ("/api/*", "/api", False),
        ("*.json", "/a/b.json", True),
        ("*.json", "/a/b.JSON", False),
        ("/caf%C3%A9", "/caf%c3%a9", True),
        ("/café", "/caf%C3%A9", True),
        ("/%61pi/*", "/api/x", True),
    ],
)
def test_path_patterns(pattern: str, path: str, allowed: bool) -> None:
    assert decide([policy("p", "ALLOW", [to(paths=[pattern])])], http(path)).allowed is allowed


# -- errors ---------------------------------------------------------------------------------


def test_invalid_policies_raise_policy_error_naming_them() -> None:
    bad = policy("broken", "ALLOW", [to(paths=["no-slash"])])
    with pytest.raises(PolicyError, match="shop/broken"):
        compile_policies([bad], WEB, trust_domain=TD)
    escape = policy("escape", "ALLOW", [to(paths=["/a%zz"])])
    with pytest.raises(PolicyError, match="shop/escape"):
        compile_policies([escape], WEB, trust_domain=TD)
    with pytest.raises(PolicyError, match="trust domain"):
        compile_policies([], WEB, trust_domain="Bad.Domain")


def test_policies_listed_in_evaluation_order() -> None:
    policies = [policy("b", "ALLOW", [{}]), policy("a", "ALLOW", [{}]), policy("z", "DENY")]
    evaluator = compile_policies(policies, Target("shop"), trust_domain=TD)
    assert evaluator.policies == ("shop/z", "shop/a", "shop/b")
