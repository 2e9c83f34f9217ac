"""Where a connection or request goes, as the connection handlers see it.

A listener turns each accepted connection into a :class:`ConnRoute` (outbound.py /
inbound.py): which service the original destination is, whether to skip protocol detection,
who the peers are for telemetry, how to pick an upstream for opaque TCP, and how to
:meth:`~ConnRoute.plan` one HTTP request. A :class:`Plan` is the per-request answer: the
matched route's timeouts and retry policy, and an endpoint picker.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from hybridmesh.proxy.balance import ServiceBalancer
from hybridmesh.proxy.protocols.http1 import Request
from hybridmesh.proxy.retry import RetryBudget, RetryPolicy
from hybridmesh.proxy.upstream import EndpointKey
from hybridmesh.telemetry.proxy_metrics import Peer

__all__ = ["NO_RETRY", "ConnRoute", "Plan", "finite"]

NO_RETRY = RetryPolicy()
"""Passthrough and inbound traffic: only a failed connect is tried again (nothing was sent)."""


def finite(seconds: float | None) -> float | None:
    """A route timeout as the engine uses it: None and ``inf`` (disabled) both mean none."""
    return None if seconds is None or math.isinf(seconds) else seconds


@dataclass(slots=True)
class Plan:
    """One request's destination: endpoints (balanced or fixed), policies, labels."""

    service: str  # destination_service label (FQDN, or ip:port for passthrough)
    destination: str  # for error messages: "web.shop.svc.cluster.local:80"
    route: str | None
    retry: RetryPolicy
    request_timeout_s: float | None
    backend_timeout_s: float | None
    balancer: ServiceBalancer | None = None
    fixed: EndpointKey | None = None
    budget: RetryBudget | None = None
    fixed_peer: Peer | None = None
    app_protocol: str | None = None  # the destination port's appProtocol (http2/grpc: h2)

    def pick(self, tried: Collection[EndpointKey]) -> EndpointKey | None:
        if self.balancer is not None:
            return self.balancer.pick(tried)
        return self.fixed

    def placement(self, key: EndpointKey) -> str | None:
        """The endpoint's data-plane placement (``sidecar``: a proxy answers there)."""
        if self.balancer is not None:
            meta = self.balancer.meta.get(key)
            if meta is not None:
                return meta.placement
        return None

    def peer(self, key: EndpointKey) -> Peer:
        """The destination's telemetry identity."""
        if self.fixed_peer is not None:
            return self.fixed_peer
        if self.balancer is not None:
            meta = self.balancer.meta.get(key)
            if meta is not None:
                return meta.peer
        return Peer.unknown()


class ConnRoute(Protocol):
    """Per-connection routing facts, computed once at accept time."""

    reporter: str
    service: str  # destination_service label of the connection
    destination: str  # human-readable destination
    authority: str  # host[:port] for a request that named none (HTTP/1.0)
    opaque: bool  # skip detection (appProtocol tcp/opaque)
    source: Peer
    identity_headers: tuple[tuple[bytes, bytes], ...] | None
    """Inbound: identity headers replacing any client-sent ones (peer_identity.py); None on
    outbound (headers untouched)."""

    def pick_tcp(self, tried: Collection[EndpointKey]) -> tuple[EndpointKey, Peer] | None:
        """An upstream for an opaque connection (None: no endpoint)."""
        ...

    def finish_tcp(self, key: EndpointKey, started: float, ok: bool) -> None:
        """Report a connect outcome to the balancer/outlier detection (no-op if none)."""
        ...

    def admit(self, request: Request) -> tuple[Request, tuple[bool, str] | None]:
        """The request to forward and the authorization verdict (inbound: normalized path,
        AuthorizationPolicy; raises the proxy's 400/403). Outbound: unchanged, None."""
        ...

    def plan(self, request: Request) -> Plan:
        """Route one HTTP request (raises ProxyError when it cannot go anywhere)."""
        ...
