"""Where AuthorizationPolicy decisions plug into the proxy (the engine is ``hybridmesh.policy``).

The proxy calls an :class:`InboundPolicy` at two places, both on the inbound (destination)
side, where the peer's identity is *verified* (mTLS) or known to be absent (plaintext):

- :func:`authorize_request` — from ``InboundRoute.plan`` for every HTTP request (HTTP/1 and
  HTTP/2), before any byte reaches the app; a denial becomes the proxy's 403 ``policy``;
- :func:`authorize_connection` — from ``mtls_server`` when an inbound connection becomes an
  opaque TCP relay (L4 rules only); a denial closes the connection.

Until the engine is wired (``ProxyContext.policy`` stays None) both allow everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.proxy.errors import ProxyError, Reason
from hybridmesh.proxy.protocols.http1 import Request

if TYPE_CHECKING:
    from hybridmesh.proxy.context import ProxyContext

__all__ = ["InboundPolicy", "authorize_connection", "authorize_request"]


class InboundPolicy(Protocol):
    """Decisions for this pod's inbound traffic; a string return is the denial's reason."""

    def check_request(self, *, peer: SpiffeId | None, port: int, request: Request) -> str | None:
        ...

    def check_connection(self, *, peer: SpiffeId | None, port: int) -> str | None:
        ...


def authorize_request(ctx: ProxyContext, peer: SpiffeId | None, port: int, request: Request,
                      destination: str) -> None:
    """Raise the proxy's 403 if the policy denies ``request`` from ``peer`` (None: plaintext)."""
    policy = ctx.policy
    if policy is None:
        return
    denied = policy.check_request(peer=peer, port=port, request=request)
    if denied is not None:
        raise ProxyError(Reason.POLICY, destination, denied)


def authorize_connection(ctx: ProxyContext, peer: SpiffeId | None, port: int) -> bool:
    """Whether an opaque inbound connection from ``peer`` to ``port`` may proceed."""
    policy = ctx.policy
    if policy is None:
        return True
    if policy.check_connection(peer=peer, port=port) is None:
        return True
    ctx.metrics.proxy_error(Reason.POLICY.value)
    return False
