"""The L4 policy compiler: identities, decision-table compression, and agreement with the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridmesh.agent.datapath import NodeState, PodView
from hybridmesh.control.model import ServiceInfo
from hybridmesh.ebpf.l4compile import (
    ALLOW,
    DEFAULT_DENY,
    DROP,
    FIRST_POD_ID,
    ID_ANY,
    ID_HOST,
    ID_WORLD,
    NO_POLICY,
    PORT_ANY,
    IdentityLabels,
    RuleKey,
    allocate,
    compile_state,
)
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.policy import RequestAttributes, Target, compile_policies
from hybridmesh.resources.models import AuthorizationPolicy

TD = "cluster.local"
WORLD_IP = "192.0.2.1"


def pod(name: str, ip: str, ns: str = "shop", sa: str | None = None, *,
        local: bool = True, placement: str = "kernel", **labels: str) -> PodView:
    workload = name.rsplit("-", 1)[0]
    return PodView(
        namespace=ns, name=name, ip=ip, node="n1", service_account=sa or workload,
        placement=placement, labels=labels or {"app": workload},
        cgroup=Path(f"/sys/fs/cgroup/unified/hm-lab/{name}") if local else None,
    )


def policy(name: str, spec: dict[str, Any], ns: str = "shop") -> AuthorizationPolicy:
    return AuthorizationPolicy.model_validate({
        "apiVersion": "hybridmesh.io/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    })


FRONTEND = pod("frontend-0", "10.0.0.1")
CATALOG = pod("catalog-0", "10.0.0.2")
RATINGS = pod("ratings-0", "10.0.0.3")
OTHER_NS = pod("client-0", "10.0.1.1", ns="lab", local=False)
PODS = (FRONTEND, CATALOG, RATINGS, OTHER_NS)

ALLOW_FRONTEND = policy("catalog-allow", {
    "selector": {"matchLabels": {"app": "catalog"}},
    "action": "ALLOW",
    "rules": [{"from": [{"source": {"principals": [f"spiffe://{TD}/ns/shop/sa/frontend"]}}],
               "to": [{"operation": {"ports": ["8080"]}}]}],
})


def state(*policies: AuthorizationPolicy, pods: tuple[PodView, ...] = PODS,
          services: tuple[ServiceInfo, ...] = ()) -> NodeState:
    return NodeState("n1", 1, pods, services, policies, trust_domain=TD)


# --- identities ------------------------------------------------------------------------------


def test_pods_with_the_same_namespace_account_and_labels_share_an_identity() -> None:
    twin = pod("frontend-1", "10.0.0.9")
    plan = compile_state(state(pods=(*PODS, twin)))
    assert plan.ipcache["10.0.0.9"] == plan.ipcache[FRONTEND.ip]
    assert plan.ipcache[CATALOG.ip] != plan.ipcache[FRONTEND.ip]
    assert all(n >= FIRST_POD_ID for n in plan.ipcache.values())
    assert plan.identities[plan.ipcache[FRONTEND.ip]] == IdentityLabels.of(FRONTEND)


def test_identities_are_stable_across_runs_and_unaffected_by_new_pods() -> None:
    first = compile_state(state())
    again = compile_state(state(pods=(pod("new-0", "10.0.0.7"), *reversed(PODS))))
    assert {ip: again.ipcache[ip] for ip in first.ipcache} == dict(first.ipcache)


def test_allocate_probes_past_collisions_deterministically() -> None:
    numbers = allocate(["a", "b", "c"], 10, 13, lambda _item: b"\0" * 8)
    assert sorted(numbers.values()) == [10, 11, 12]
    assert numbers == allocate(["c", "b", "a"], 10, 13, lambda _item: b"\0" * 8)


# --- decisions -------------------------------------------------------------------------------


def test_no_policy_means_no_rules_and_everything_allowed() -> None:
    plan = compile_state(state())
    assert plan.rules == {}
    assert plan.decide(RATINGS.ip, FRONTEND.ip, 80) == NO_POLICY


def test_allow_opens_its_source_and_port_and_closes_the_rest() -> None:
    plan = compile_state(state(ALLOW_FRONTEND))
    allowed = plan.decide(FRONTEND.ip, CATALOG.ip, 8080)
    assert allowed.verdict == ALLOW
    assert plan.policy_name(allowed.policy) == "shop/catalog-allow"
    for src, port in ((RATINGS.ip, 8080), (FRONTEND.ip, 9090), (WORLD_IP, 8080)):
        dropped = plan.decide(src, CATALOG.ip, port)
        assert (dropped.verdict, dropped.flags) == (DROP, DEFAULT_DENY), (src, port)
        assert plan.policy_name(dropped.policy) == "shop/catalog-allow"
    # frontend itself is not selected: still open to anyone
    assert plan.decide(RATINGS.ip, FRONTEND.ip, 80) == NO_POLICY


def test_rules_are_compressed_to_a_default_plus_exceptions() -> None:
    plan = compile_state(state(ALLOW_FRONTEND))
    catalog, frontend = plan.ipcache[CATALOG.ip], plan.ipcache[FRONTEND.ip]
    assert set(plan.rules) == {
        RuleKey(ID_ANY, catalog, PORT_ANY),
        RuleKey(frontend, catalog, 8080),
        RuleKey(ID_HOST, catalog, PORT_ANY),
    }


def test_the_node_itself_may_always_reach_its_pods() -> None:
    deny_all = policy("deny-all", {"action": "DENY", "rules": [{}]})
    plan = compile_state(state(ALLOW_FRONTEND, deny_all), host_ips=["10.0.0.254"])
    assert plan.identity_of("10.0.0.254") == ID_HOST
    assert plan.decide("10.0.0.254", CATALOG.ip, 8080) == NO_POLICY
    assert plan.decide(FRONTEND.ip, CATALOG.ip, 8080).verdict == DROP


def test_deny_beats_allow_and_names_the_deny() -> None:
    deny = policy("no-ratings", {"action": "DENY", "rules": [
        {"from": [{"source": {"serviceAccounts": ["shop/ratings"]}}]}]})
    allow_ns = policy("shop-only", {"action": "ALLOW", "rules": [
        {"from": [{"source": {"namespaces": ["shop"]}}]}]})
    plan = compile_state(state(deny, allow_ns))
    v = plan.decide(RATINGS.ip, CATALOG.ip, 8080)
    assert (v.verdict, v.flags, plan.policy_name(v.policy)) == (DROP, 0, "shop/no-ratings")
    assert plan.decide(FRONTEND.ip, CATALOG.ip, 8080).verdict == ALLOW
    other = plan.decide(OTHER_NS.ip, CATALOG.ip, 8080)
    assert (other.verdict, other.flags) == (DROP, DEFAULT_DENY)
    # the DENY names a service account: an unknown address may be anyone, so it is denied
    world = plan.decide(WORLD_IP, CATALOG.ip, 8080)
    assert (world.verdict, plan.policy_name(world.policy)) == (DROP, "shop/no-ratings")


def test_a_policy_with_only_http_fields_opens_nothing() -> None:
    get_only = policy("get-only", {"selector": {"matchLabels": {"app": "catalog"}}, "rules": [
        {"to": [{"operation": {"methods": ["GET"], "ports": ["8080"]}}]}]})
    plan = compile_state(state(get_only))
    for src in (FRONTEND.ip, RATINGS.ip, WORLD_IP):
        v = plan.decide(src, CATALOG.ip, 8080)
        assert (v.verdict, v.flags, plan.policy_name(v.policy)) == (
            DROP, DEFAULT_DENY, "shop/get-only")


def test_a_deny_with_http_fields_is_widened_to_its_ports() -> None:
    deny_admin = policy("no-admin", {"action": "DENY", "rules": [
        {"to": [{"operation": {"paths": ["/admin"], "ports": ["8080"]}}]}]})
    plan = compile_state(state(deny_admin))
    assert plan.decide(FRONTEND.ip, CATALOG.ip, 8080).verdict == DROP
    assert plan.decide(FRONTEND.ip, CATALOG.ip, 9090) == NO_POLICY


def test_an_allow_without_sources_admits_unknown_addresses() -> None:
    open_port = policy("open", {"rules": [{"to": [{"operation": {"ports": ["80"]}}]}]})
    plan = compile_state(state(open_port))
    assert plan.decide(WORLD_IP, CATALOG.ip, 80).verdict == ALLOW
    assert plan.decide(WORLD_IP, CATALOG.ip, 81).verdict == DROP


def test_only_local_pods_in_an_enforced_placement_get_rules() -> None:
    sidecar = pod("catalog-0", "10.0.0.2", placement="sidecar")
    remote = pod("frontend-0", "10.0.0.1", local=False)
    plan = compile_state(state(ALLOW_FRONTEND, pods=(sidecar, remote, RATINGS)))
    assert plan.rules == {}  # ratings is not selected; catalog is a sidecar pod
    assert plan.enforced == {plan.ipcache[RATINGS.ip]}


def test_target_refs_allow_only_closes_its_backends() -> None:
    svc = ServiceInfo("catalog", "shop", "10.96.0.5", (), {"app": "catalog"})
    via = policy("via-svc", {"targetRefs": [{"name": "catalog"}], "rules": [{}]})
    plan = compile_state(state(via, services=(svc,)))
    v = plan.decide(FRONTEND.ip, CATALOG.ip, 8080)
    assert (v.verdict, v.flags) == (DROP, DEFAULT_DENY)


# --- agreement with the engine on random inputs ----------------------------------------------

NAMESPACES = ("a", "b")
ACCOUNTS = ("x", "y")
PORTS = ("80", "8080")
PRINCIPALS = ("*", f"spiffe://{TD}/ns/a/sa/x", f"spiffe://{TD}/ns/b/*", "spiffe://other.td/ns/a/sa/x")

sources = st.fixed_dictionaries({}, optional={
    "principals": st.lists(st.sampled_from(PRINCIPALS), min_size=1, max_size=2),
    "notPrincipals": st.lists(st.sampled_from(PRINCIPALS), min_size=1, max_size=1),
    "namespaces": st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=1),
    "notNamespaces": st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=1),
    "serviceAccounts": st.lists(st.sampled_from(["a/x", "b/y"]), min_size=1, max_size=1),
}).filter(bool)
operations = st.fixed_dictionaries({}, optional={
    "ports": st.lists(st.sampled_from(PORTS), min_size=1, max_size=2),
    "notPorts": st.lists(st.sampled_from(PORTS), min_size=1, max_size=1),
    "methods": st.just(["GET"]),
    "paths": st.just(["/admin"]),
}).filter(bool)
rules = st.fixed_dictionaries({}, optional={
    "from": st.lists(st.builds(lambda s: {"source": s}, sources), max_size=2),
    "to": st.lists(st.builds(lambda o: {"operation": o}, operations), max_size=2),
})
specs = st.fixed_dictionaries(
    {"action": st.sampled_from(["ALLOW", "DENY"]), "rules": st.lists(rules, max_size=2)},
    optional={"selector": st.builds(lambda app: {"matchLabels": {"app": app}},
                                    st.sampled_from(["p", "q"]))},
)
policies = st.lists(
    st.tuples(st.sampled_from(NAMESPACES), specs), max_size=3
).map(lambda items: tuple(policy(f"p{i}", spec, ns) for i, (ns, spec) in enumerate(items)))
pod_lists = st.lists(
    st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(ACCOUNTS), st.sampled_from("pq"),
              st.booleans()),
    min_size=1, max_size=4,
).map(lambda items: tuple(
    pod(f"w{i}-0", f"10.1.0.{i + 1}", ns, sa, local=local, app=app)
    for i, (ns, sa, app, local) in enumerate(items)
))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods=pod_lists, pols=policies)
def test_the_kernel_lookup_decides_as_the_engine(
    pods: tuple[PodView, ...], pols: tuple[AuthorizationPolicy, ...]
) -> None:
    plan = compile_state(NodeState("n1", 1, pods, (), pols, trust_domain=TD))
    for dst in (p for p in pods if p.local):
        evaluator = compile_policies(pols, Target(dst.namespace, dict(dst.labels)),
                                     trust_domain=TD)
        for src in (*pods, None):
            principal = SpiffeId.for_workload(TD, src.namespace, src.service_account) if src \
                else None
            for port in (80, 8080, 9999):
                want = evaluator.decide(RequestAttributes.tcp(principal, port))
                got = plan.decide(src.ip if src else WORLD_IP, dst.ip, port)
                assert got.allowed == want.allowed, (src, dst, port, want.reason)
                if want.action == "DENY":
                    assert plan.policy_name(got.policy) == want.policy
                if not want.allowed and want.policy is None:
                    assert got.flags == DEFAULT_DENY
                assert plan.identity_of(WORLD_IP) == ID_WORLD
