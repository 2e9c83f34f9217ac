"""The waypoint: the sidecar engine as the L7 proxy of one Service whose pods are ``node`` pods.

A waypoint pod (``waypoint-<svc>-0``, service account ``waypoint``, label
``hybridmesh.io/waypoint-for: <svc>``, made by ``control/waypoints.py``) runs the ordinary
sidecar engine. Node proxies send it their pods' connections to the Service as HBONE streams
(``CONNECT <cluster IP>:<port>``, hbone_server.py), authenticated with the *caller's* SVID.
For each such stream a :class:`WaypointRoute` does what the caller's sidecar would have done
plus what the destination's sidecar would have done:

- the Service's AuthorizationPolicies, L7 included, judged against the caller's verified
  identity (the tunnel's peer), as if the request arrived at the Service's pods *through the
  Service* (``Target.via``), using the Service's selector as the pods' labels: the 403 names
  the policy like a sidecar's;
- the Service's HTTPRoutes, balancing and retries (the outbound route of the cluster IP);
- onward, a CONNECT stream to the chosen pod's node proxy with the waypoint's own identity
  (mtls.py → hbone.py), which the destination node proxy must accept (docs/node.md §5).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Final

from hybridmesh.control.model import WAYPOINT_LABEL
from hybridmesh.proxy.outbound import OutboundRoute
from hybridmesh.proxy.policy_hook import InboundAuthz, Verdict
from hybridmesh.telemetry.proxy_metrics import UNKNOWN, Peer

if TYPE_CHECKING:
    from hybridmesh.proxy.context import ProxyContext
    from hybridmesh.proxy.discovery import ServicePort, Tables
    from hybridmesh.proxy.peer_identity import HeaderFields, VerifiedPeer
    from hybridmesh.proxy.plan import Plan
    from hybridmesh.proxy.protocols.http1 import Request
    from hybridmesh.proxy.upstream import EndpointKey

__all__ = ["REPORTER_WAYPOINT", "WAYPOINT_LABEL", "WaypointAuthz", "WaypointRoute",
           "served_service"]

REPORTER_WAYPOINT: Final = "waypoint"
"""The metrics ``reporter`` of requests a waypoint proxied (Istio's label value)."""


def served_service(tables: Tables) -> str | None:
    """``ns/name`` of the Service this pod is the waypoint of (None: not a waypoint)."""
    pod: Mapping[str, Any] = tables.snapshot.get("pod") or {}
    name = (pod.get("labels") or {}).get(WAYPOINT_LABEL)
    return f"{tables.pod.namespace}/{name}" if name else None


def peer_of(verified: VerifiedPeer) -> Peer:
    """The caller as a telemetry peer: its service account stands for its workload."""
    ident = verified.peer
    return Peer(ident.service_account or UNKNOWN, ident.namespace or UNKNOWN, str(ident))


class WaypointAuthz:
    """The served Service's policies, compiled per snapshot with the Service as the target."""

    def __init__(self, ctx: ProxyContext) -> None:
        self._ctx = ctx
        self._for: tuple[Tables, str] | None = None
        self._authz = InboundAuthz(ctx.policy.metrics if ctx.policy is not None else None)

    def current(self, tables: Tables, service: str) -> InboundAuthz:
        """The decisions for ``service`` under ``tables`` (recompiled when they change)."""
        cached = self._for
        if cached is None or cached[0] is not tables or cached[1] != service:
            self._authz.install(_as_service_pods(tables, service))
            self._for = (tables, service)
        return self._authz


def _as_service_pods(tables: Tables, service: str) -> Tables:
    """Tables whose "pod" is the Service's pods as policies see them: its namespace, its
    selector as labels, and the Service itself as the only one selecting them."""
    namespace, _, name = service.partition("/")
    raw = next((s for s in tables.snapshot.get("services") or ()
                if s.get("namespace") == namespace and s.get("name") == name), None)
    selector = dict((raw or {}).get("selector") or {})
    snapshot = {**tables.snapshot, "pod": {"namespace": namespace, "labels": selector},
                "services": [raw] if raw is not None else []}
    return dataclasses.replace(tables, snapshot=snapshot)


class WaypointRoute:
    """A CONNECT stream to the served Service's cluster IP (a ``ConnRoute``, see plan.py)."""

    reporter = REPORTER_WAYPOINT

    def __init__(self, ctx: ProxyContext, tables: Tables, sp: ServicePort, vip: EndpointKey,
                 *, verified: VerifiedPeer, authz: InboundAuthz) -> None:
        self._out = OutboundRoute(ctx, tables, vip)
        self._sp = sp
        self._authz = authz
        self.verified = verified
        self.service = self._out.service
        self.destination = self._out.destination
        self.authority = self._out.authority
        self.opaque = self._out.opaque
        self.source = peer_of(verified)
        self.identity_headers: HeaderFields | None = verified.header_fields()

    @property
    def port(self) -> int:
        """The pods' port: what policies' ``to.ports`` name."""
        return self._sp.target_port

    def allows_tcp(self) -> bool:
        """An opaque connection (L4 rules only) from the caller."""
        decision = self._authz.check_connection(self.verified.peer, self.port)
        return decision is not None and decision.allowed

    def pick_tcp(self, tried: Collection[EndpointKey]) -> tuple[EndpointKey, Peer] | None:
        return self._out.pick_tcp(tried)

    def finish_tcp(self, key: EndpointKey, started: float, ok: bool) -> None:
        self._out.finish_tcp(key, started, ok)

    def admit(self, request: Request) -> tuple[Request, Verdict | None]:
        """The Service's policies for the caller (403 naming the policy), normalized path."""
        return self._authz.admit_request(self.verified.peer, self.port, request,
                                         self.destination)

    def plan(self, request: Request) -> Plan:
        return self._out.plan(request)
