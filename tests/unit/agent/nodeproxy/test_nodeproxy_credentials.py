"""The CA's node check: a node proxy gets SVIDs for its own node's `node` pods only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hybridmesh.agent.nodeproxy.credentials import (
    NodeRequestRefused,
    NodeTokens,
    authorize_node_request,
    is_node_request,
    node_request_token,
)
from hybridmesh.control.model import PodInfo


class Plan:
    def __init__(self, *pods: PodInfo) -> None:
        self.pods = {p.key: p for p in pods}

    def pod(self, key: str) -> PodInfo | None:
        return self.pods.get(key)


def pod(name: str, node: str, placement: str = "node", sa: str = "web") -> PodInfo:
    return PodInfo(name, "shop", name.rsplit("-", 1)[0], 0, node, "10.0.0.1", sa, placement)


PLAN = Plan(pod("web-0", "n1"), pod("db-0", "n2", sa="db"), pod("side-0", "n1", "sidecar"))


def refused(tokens: NodeTokens, token: str, plan: Plan = PLAN) -> NodeRequestRefused:
    with pytest.raises(NodeRequestRefused) as info:
        authorize_node_request(tokens, token, plan)
    return info.value


def test_own_node_pod_is_signed_with_the_plans_service_account() -> None:
    tokens = NodeTokens("cluster.local")
    claims = authorize_node_request(tokens, node_request_token(tokens.issue("n1"), "shop/web-0"),
                                    PLAN)
    assert tuple(claims) == ("shop", "web", "web-0")


def test_pod_on_another_node_is_refused() -> None:
    tokens = NodeTokens("cluster.local")
    exc = refused(tokens, node_request_token(tokens.issue("n1"), "shop/db-0"))
    assert (exc.status, exc.code) == (403, "pod-on-other-node")
    assert "n2" in exc.message


def test_sidecar_pod_and_missing_pod_are_refused() -> None:
    tokens = NodeTokens("cluster.local")
    token = tokens.issue("n1")
    assert refused(tokens, node_request_token(token, "shop/side-0")).code == "not-node-placement"
    assert refused(tokens, node_request_token(token, "shop/gone-0")).code == "pod-gone"


def test_forged_expired_and_foreign_tokens_are_refused() -> None:
    tokens = NodeTokens("cluster.local")
    other_ca = NodeTokens("cluster.local")
    past = datetime.now(UTC) - timedelta(hours=2)
    assert refused(tokens, node_request_token(other_ca.issue("n1"), "shop/web-0")).status == 401
    expired = tokens.issue("n1", ttl=timedelta(minutes=1), now=past)
    assert "expired" in refused(tokens, node_request_token(expired, "shop/web-0")).message
    foreign = NodeTokens("other.domain", secret=b"x" * 32)
    same_secret = NodeTokens("cluster.local", secret=b"x" * 32)
    assert refused(same_secret, node_request_token(foreign.issue("n1"), "shop/web-0")).code == \
        "invalid-token"


def test_tampered_node_name_does_not_verify() -> None:
    tokens = NodeTokens("cluster.local")
    version, body, mac = tokens.issue("n1").split(".")
    forged_body = tokens.issue("n2").split(".")[1]
    assert refused(tokens, node_request_token(f"{version}.{forged_body}.{mac}",
                                              "shop/web-0")).status == 401
    assert body != forged_body


@pytest.mark.parametrize("pod_part", ["", "web-0", "shop/", "a/b/c", "shop/../x"])
def test_malformed_pod_names_are_typed_refusals(pod_part: str) -> None:
    tokens = NodeTokens("cluster.local")
    exc = refused(tokens, node_request_token(tokens.issue("n1"), pod_part))
    assert exc.status in (400, 401, 403)


def test_request_kinds_are_told_apart() -> None:
    tokens = NodeTokens("cluster.local")
    assert is_node_request(node_request_token(tokens.issue("n1"), "shop/web-0"))
    assert not is_node_request("hmb1.abc.def")
