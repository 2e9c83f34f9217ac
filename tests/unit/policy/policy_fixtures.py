"""Builders shared by the policy tests: policies as the snapshot carries them, peers, requests."""

from __future__ import annotations

from typing import Any

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.policy import Decision, RequestAttributes, Target, compile_policies

TD = "cluster.local"
CLIENT = SpiffeId.for_workload(TD, "shop", "client")
OTHER = SpiffeId.for_workload(TD, "shop", "other")
STRANGER = SpiffeId.for_workload(TD, "elsewhere", "client")
FOREIGN = SpiffeId.for_workload("evil.org", "shop", "client")  # same path, other trust domain
WEB = Target("shop", {"app": "web", "version": "v1"}, frozenset({"shop/web"}), "shop/web")


def policy(
    name: str,
    action: str = "ALLOW",
    rules: list[dict[str, Any]] | None = None,
    namespace: str = "shop",
    **spec: Any,
) -> dict[str, Any]:
    """An AuthorizationPolicy as ``model_dump(mode="json", by_alias=True)`` spells it."""
    return {
        "apiVersion": "hybridmesh.io/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"action": action, "rules": rules or [], **spec},
    }


def to(**operation: Any) -> dict[str, Any]:
    return {"to": [{"operation": operation}]}


def source(**fields: Any) -> dict[str, Any]:
    return {"source": fields}


def http(
    path: str = "/",
    method: str = "GET",
    *,
    principal: SpiffeId | None = CLIENT,
    port: int = 8080,
    host: str | None = "web.shop.svc.cluster.local",
) -> RequestAttributes:
    return RequestAttributes.http(principal, port, method, path, host)


def tcp(principal: SpiffeId | None = CLIENT, port: int = 8080) -> RequestAttributes:
    return RequestAttributes.tcp(principal, port)


def decide(
    policies: list[dict[str, Any]], request: RequestAttributes, target: Target = WEB
) -> Decision:
    return compile_policies(policies, target, trust_domain=TD).decide(request)
