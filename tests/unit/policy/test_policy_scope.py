"""Which policies bind a destination: selector, namespace, root namespace, targetRefs."""

from __future__ import annotations

import pytest
from policy_fixtures import TD, decide, http, policy, to

from hybridmesh.policy import ROOT_NAMESPACE, Target, compile_policies


def _denies(target: Target, **kwargs: object) -> bool:
    spec = {k: v for k, v in kwargs.items() if k != "namespace"}
    namespace = str(kwargs.get("namespace", "shop"))
    deny = policy("deny", "DENY", [{}], namespace=namespace, **spec)
    return not decide([deny], http("/"), target).allowed


WEB_DIRECT = Target("shop", {"app": "web", "version": "v1"}, frozenset({"shop/web"}))
WEB_VIA_WEB = Target("shop", {"app": "web"}, frozenset({"shop/web", "shop/web-canary"}), "shop/web")
WEB_VIA_CANARY = Target(
    "shop", {"app": "web"}, frozenset({"shop/web", "shop/web-canary"}), "shop/web-canary"
)
DB = Target("data", {"app": "db"}, frozenset({"data/db"}), "data/db")


@pytest.mark.parametrize(
    ("selector", "binds"),
    [
        ({"app": "web"}, True),
        ({"app": "web", "version": "v1"}, True),
        ({"app": "web", "version": "v2"}, False),
        ({"app": "db"}, False),
    ],
)
def test_selector_is_a_subset_of_the_workload_labels(selector: dict[str, str], binds: bool) -> None:
    assert _denies(WEB_DIRECT, selector={"matchLabels": selector}) is binds


def test_no_selector_binds_the_whole_namespace_and_only_it() -> None:
    assert _denies(WEB_DIRECT)
    assert not _denies(DB)
    assert _denies(DB, namespace="data")


def test_root_namespace_policies_apply_mesh_wide() -> None:
    assert _denies(DB, namespace=ROOT_NAMESPACE)
    assert _denies(WEB_DIRECT, namespace=ROOT_NAMESPACE, selector={"matchLabels": {"app": "web"}})
    assert not _denies(DB, namespace=ROOT_NAMESPACE, selector={"matchLabels": {"app": "web"}})


def test_root_namespace_can_be_changed() -> None:
    deny = policy("deny", "DENY", [{}], namespace="mesh-root")
    assert compile_policies([deny], DB, trust_domain=TD, root_namespace="mesh-root").policies
    assert not compile_policies([deny], DB, trust_domain=TD).policies


def test_target_refs_bind_requests_through_the_service() -> None:
    refs = {"targetRefs": [{"name": "web"}]}
    assert _denies(WEB_VIA_WEB, **refs)
    assert not _denies(DB, **refs)
    assert not _denies(DB, namespace="data", targetRefs=[{"name": "web"}])


def test_a_deny_on_a_service_cannot_be_bypassed_by_another_route_to_its_pods() -> None:
    refs = {"targetRefs": [{"name": "web"}]}
    assert _denies(WEB_VIA_CANARY, **refs)
    assert _denies(WEB_DIRECT, **refs)


def test_an_allow_on_a_service_grants_only_through_it_but_closes_other_routes() -> None:
    allow = policy("allow-web", "ALLOW", [to(paths=["/*"])], targetRefs=[{"name": "web"}])
    assert decide([allow], http("/"), WEB_VIA_WEB).allowed
    for target in (WEB_VIA_CANARY, WEB_DIRECT):
        decision = decide([allow], http("/"), target)
        assert not decision.allowed
        assert "shop/allow-web (via another Service)" in decision.reason
    assert decide([allow], http("/"), DB).allowed


def test_policies_of_other_namespaces_never_bind() -> None:
    foreign = policy("deny", "DENY", [{}], namespace="elsewhere")
    assert compile_policies([foreign], WEB_DIRECT, trust_domain=TD).policies == ()
    assert decide([foreign], http("/"), WEB_DIRECT).allowed
