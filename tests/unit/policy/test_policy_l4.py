"""The L4 projection: its shapes, and that it decides TCP connections exactly as the engine."""

from __future__ import annotations

from policy_fixtures import CLIENT, decide, policy, source, tcp, to

from hybridmesh.policy import L4Ports, L4Rule, L4Source, l4_policy, l4_rules, load_policies

FROM_CLIENT = {"from": [source(principals=[str(CLIENT)], notNamespaces=["x"])]}


def test_deny_drops_http_fields_and_is_marked_widened() -> None:
    deny = policy(
        "d",
        "DENY",
        [{**FROM_CLIENT, "to": [{"operation": {"ports": ["8080"], "paths": ["/admin"]}}]}],
    )
    assert l4_rules([deny]) == [
        L4Rule(
            policy="shop/d",
            action="DENY",
            namespace="shop",
            selector=None,
            target_refs=(),
            rule=0,
            sources=(L4Source(principals=(str(CLIENT),), not_namespaces=("x",)),),
            ports=(L4Ports(ports=("8080",)),),
            widened=True,
        )
    ]


def test_deny_operation_with_only_http_fields_matches_any_port() -> None:
    deny = policy("d", "DENY", [to(methods=["POST"]), to(ports=["1"], hosts=["h"])])
    rules = l4_rules([deny])
    assert [(r.rule, r.ports, r.widened) for r in rules] == [
        (0, (), True),
        (1, (L4Ports(("1",)),), True),
    ]


def test_allow_keeps_l4_operations_and_drops_l7_ones() -> None:
    mixed = {"to": [{"operation": {"ports": ["8080"]}}, {"operation": {"paths": ["/x"]}}]}
    allow = policy(
        "a", "ALLOW", [mixed, to(methods=["GET"])], selector={"matchLabels": {"app": "w"}}
    )
    rules = l4_rules([allow])
    assert len(rules) == 1
    assert (rules[0].rule, rules[0].ports, rules[0].widened) == (0, (L4Ports(("8080",)),), False)
    assert rules[0].selector == {"app": "w"} and not rules[0].never_matches


def test_an_allow_left_without_rules_still_closes_its_target() -> None:
    for allow in (policy("a", "ALLOW", [to(paths=["/x"])]), policy("a", "ALLOW")):
        (marker,) = l4_rules([allow])
        assert marker.never_matches and marker.rule is None and marker.action == "ALLOW"
    assert l4_rules([policy("d", "DENY")]) == []


def test_target_refs_are_carried() -> None:
    allow = policy("a", "ALLOW", [FROM_CLIENT], targetRefs=[{"name": "web"}])
    assert l4_rules([allow])[0].target_refs == ("web",)


def test_projected_policy_decides_tcp_like_the_original() -> None:
    original = [
        policy(
            "a",
            "ALLOW",
            [
                {
                    **FROM_CLIENT,
                    "to": [{"operation": {"ports": ["8080"]}}, {"operation": {"paths": ["/"]}}],
                }
            ],
        ),
        policy("d", "DENY", [to(ports=["9090"], methods=["GET"])]),
    ]
    projected = [l4_policy(p) for p in load_policies(original)]
    for request in (tcp(), tcp(port=9090), tcp(None), tcp(port=1)):
        projected_json = [p.model_dump(mode="json", by_alias=True) for p in projected]
        assert decide(original, request).allowed == decide(projected_json, request).allowed
    assert decide(original, tcp()).allowed and not decide(original, tcp(port=9090)).allowed
