"""The inbound authz hook remembers normalized paths and evaluators: a remembered answer must
be the one a fresh computation gives, and a new snapshot must not see the old policies."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from hybridmesh.proxy.discovery import Tables
from hybridmesh.proxy.errors import ProxyError
from hybridmesh.proxy.policy_hook import InboundAuthz, PolicyDenied
from hybridmesh.proxy.protocols.http1 import Request

DENY_ADMIN = {
    "apiVersion": "hybridmesh.io/v1alpha1", "kind": "AuthorizationPolicy",
    "metadata": {"name": "deny-admin", "namespace": "default"},
    "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]},
}  # fmt: skip


def tables(version: int, policies: list[dict[str, Any]]) -> Tables:
    snapshot = {"pod": {"namespace": "default", "labels": {"app": "web"}},
                "services": [], "policies": policies}
    fake = SimpleNamespace(snapshot=snapshot, version=version,
                           pod=SimpleNamespace(namespace="default"))
    return cast(Tables, fake)


def get(target: bytes, host: bytes = b"web") -> Request:
    return Request(b"GET", target, ((b"host", host),))


def admit(authz: InboundAuthz, request: Request) -> Request:
    return authz.admit_request(None, 8080, request, "web:8080")[0]


def test_remembered_path_is_normalized_and_still_decided() -> None:
    authz = InboundAuthz()
    authz.install(tables(1, [DENY_ADMIN]))
    for _ in range(2):  # the second time from the caches
        assert admit(authz, get(b"/a/./b/../c")).target == b"/a/c"
        with pytest.raises(PolicyDenied):
            admit(authz, get(b"/x/../admin"))


def test_bad_path_is_refused_every_time() -> None:
    authz = InboundAuthz()
    authz.install(tables(1, []))
    for _ in range(2):
        with pytest.raises(ProxyError) as err:
            admit(authz, get(b"/admin%2Fx"))  # an escaped slash: refused
        assert err.value.code == 400


def test_new_snapshot_drops_the_remembered_evaluator() -> None:
    authz = InboundAuthz()
    authz.install(tables(1, [DENY_ADMIN]))
    with pytest.raises(PolicyDenied):
        admit(authz, get(b"/admin"))
    authz.install(tables(2, []))
    assert admit(authz, get(b"/admin")).target == b"/admin"


def test_absolute_form_target_becomes_origin_form_with_its_host() -> None:
    authz = InboundAuthz()
    authz.install(tables(1, []))
    got = admit(authz, get(b"http://web.default:8080/a/../b", host=b"other"))
    assert got.target == b"/b"
    assert got.headers[0] == (b"host", b"web.default:8080")
    assert [v for n, v in got.headers if n == b"host"] == [b"web.default:8080"]
