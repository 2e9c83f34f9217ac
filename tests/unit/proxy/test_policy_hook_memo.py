"""Authorization decisions are remembered per (peer, port, method, target, Host) until the
next snapshot: a remembered answer must be the one a fresh evaluation gives, for that peer
only, and a new snapshot must apply to the very next request."""

from __future__ import annotations

from typing import Any

import pytest
from test_policy_hook_caches import get, tables

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.proxy.errors import ProxyError
from hybridmesh.proxy.policy_hook import InboundAuthz, PolicyDenied
from hybridmesh.proxy.protocols.http1 import Request

CLIENT = "spiffe://cluster.local/ns/default/sa/client"
OTHER = "spiffe://cluster.local/ns/default/sa/other"


def allow(principal: str, *, methods: tuple[str, ...] = ("GET",)) -> dict[str, Any]:
    return {"apiVersion": "hybridmesh.io/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "allow", "namespace": "default"},
            "spec": {"action": "ALLOW", "rules": [{
                "from": [{"source": {"principals": [principal]}}],
                "to": [{"operation": {"methods": list(methods)}}]}]}}


def verdict(authz: InboundAuthz, peer: SpiffeId | None, request: Request) -> bool:
    try:
        authz.admit_request(peer, 8080, request, "web:8080")
    except PolicyDenied:
        return False
    return True


def test_each_peer_gets_its_own_answer_also_when_remembered() -> None:
    authz = InboundAuthz()
    authz.install(tables(1, [allow(CLIENT)]))
    client, other = SpiffeId.parse(CLIENT), SpiffeId.parse(OTHER)
    for _ in range(3):
        assert verdict(authz, client, get(b"/x"))
        assert not verdict(authz, other, get(b"/x"))
        assert not verdict(authz, None, get(b"/x"))
        assert not verdict(authz, client, Request(b"DELETE", b"/x", ((b"host", b"web"),)))
    assert authz.metrics.total(allowed=True) == 3
    assert authz.metrics.total(allowed=False) == 9


def test_an_equal_peer_object_gets_the_same_answer() -> None:
    authz = InboundAuthz()
    authz.install(tables(1, [allow(CLIENT)]))
    assert verdict(authz, SpiffeId.parse(CLIENT), get(b"/x"))
    assert verdict(authz, SpiffeId.parse(CLIENT), get(b"/x"))  # another object, same ID


def test_a_recycled_id_never_returns_another_peers_answer() -> None:
    """Entries are keyed by id(peer) and keep the peer: a new object at the address of a
    dead one must be evaluated, not answered from the dead one's entry."""
    authz = InboundAuthz()
    authz.install(tables(1, [allow(CLIENT)]))
    client, other = SpiffeId.parse(CLIENT), SpiffeId.parse(OTHER)
    assert verdict(authz, client, get(b"/x"))
    # simulate the allocator reusing client's address for `other`
    authz._decided = {(id(other), *k[1:]): e for k, e in authz._decided.items()}
    assert not verdict(authz, other, get(b"/x"))


def test_a_policy_update_applies_to_the_next_request() -> None:
    authz = InboundAuthz()
    client = SpiffeId.parse(CLIENT)
    authz.install(tables(1, [allow(CLIENT)]))
    assert verdict(authz, client, get(b"/x"))
    authz.install(tables(2, [allow(OTHER)]))
    assert not verdict(authz, client, get(b"/x"))
    authz.install(tables(3, [allow(CLIENT, methods=("GET", "DELETE"))]))
    assert verdict(authz, client, Request(b"DELETE", b"/x", ((b"host", b"web"),)))


def test_the_denial_detail_names_the_policy_also_when_remembered() -> None:
    authz = InboundAuthz()
    authz.install(tables(1, [allow(OTHER)]))
    details = set()
    for _ in range(2):
        with pytest.raises(PolicyDenied) as err:
            authz.admit_request(SpiffeId.parse(CLIENT), 8080, get(b"/x"), "web:8080")
        details.add(err.value.detail)
        assert err.value.verdict == (False, "default")
    assert len(details) == 1 and "no ALLOW policy matched" in details.pop()


def test_a_bad_host_is_refused_every_time() -> None:
    authz = InboundAuthz()
    authz.install(tables(1, [allow(CLIENT)]))
    for _ in range(2):
        with pytest.raises(ProxyError) as err:
            authz.admit_request(SpiffeId.parse(CLIENT), 8080, get(b"/x", host=b"a b"), "w")
        assert err.value.code == 400


def test_broken_policies_deny_every_request_until_a_good_snapshot() -> None:
    authz = InboundAuthz()
    client = SpiffeId.parse(CLIENT)
    broken = allow(CLIENT)
    broken["spec"]["action"] = "MAYBE"
    authz.install(tables(1, [broken]))
    for _ in range(2):
        with pytest.raises(PolicyDenied) as err:
            authz.admit_request(client, 8080, get(b"/x"), "web:8080")
        assert err.value.verdict == (False, "invalid")
        assert "policies are invalid" in err.value.detail
    authz.install(tables(2, []))
    assert verdict(authz, client, get(b"/x"))
