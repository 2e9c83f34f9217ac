"""A sidecar calling a Service that has a waypoint: through the waypoint, never around it.

A Service whose pods are all ``node`` pods and that needs L7 gets a waypoint
(control/waypoints.py); its HTTPRoutes and L7 AuthorizationPolicies are applied there, and the
pods' node proxies only judge it at L4 (a policy with paths cannot be projected to L4 without
failing closed). So, as in Istio, a sidecar does not balance such a Service over its endpoints:
every connection to its cluster IP (opaque or HTTP) becomes a CONNECT stream with
``:authority`` = the cluster IP and port to the waypoint pod's HBONE port, in this proxy's own
tunnel (its SVID), the waypoint proving it is ``spiffe://<td>/ns/<ns>/sa/waypoint`` (secure
naming). The waypoint then judges the request with *our* identity (a 403 names the policy),
routes it and carries it to a pod.

The waypoint is found as node proxies find it (proxy/hbone_via.py): the ready endpoint of the
Service ``waypoint-<svc>`` (port 15008) in our snapshot, cached per snapshot. A waypointed
Service without a ready waypoint is refused (``no-waypoint``, 503): never a bypass. The
waypoint itself (its ``OutboundRoute`` carries the streams onward) is exempt.

Hooks: ``OutboundRoute`` asks :func:`waypoint_hop` once per snapshot and connection, then
:func:`pick_via` / :func:`plan_via`; ``MeshTls.meshed_peer`` asks :func:`via_meta`, whose
``node`` (``waypoint:<ip>``) makes the HBONE dialer (hbone.py) tunnel to the waypoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from hybridmesh.control.model import WAYPOINT_LABEL, WAYPOINT_SERVICE_ACCOUNT
from hybridmesh.proxy.config import TUNNEL_PORT
from hybridmesh.proxy.errors import ProxyError, Reason
from hybridmesh.proxy.plan import NO_RETRY, Plan
from hybridmesh.telemetry.proxy_metrics import Peer

if TYPE_CHECKING:
    from hybridmesh.proxy.discovery import EndpointMeta, ServicePort, Tables
    from hybridmesh.proxy.upstream import EndpointKey

__all__ = [
    "NO_WAYPOINT",
    "VIA_WAYPOINT",
    "WAYPOINT_PLACEMENT",
    "SidecarHop",
    "pick_via",
    "plan_via",
    "via_meta",
    "waypoint_hop",
]

NO_WAYPOINT: Final = "no-waypoint"
PREFIX: Final = "waypoint-"
WAYPOINT_PLACEMENT: Final = "waypoint"
"""The placement of the synthetic endpoint :func:`via_meta` returns (no real pod has it)."""
VIA_WAYPOINT: Final = "waypoint:"
"""Prefix of that endpoint's ``node``: ``waypoint:<ip>:<port>`` tells hbone.py where to go."""


@dataclass(frozen=True, slots=True)
class SidecarHop:
    """A waypointed Service as a sidecar sees it: its waypoint pod, if one is ready."""

    service: str  # "ns/name" of the served Service
    waypoint: EndpointMeta | None  # the waypoint pod (None: not ready)
    port: int  # the waypoint's HBONE port

    @property
    def peer(self) -> Peer:
        """Telemetry's destination: the waypoint (what we connect to and verify)."""
        if self.waypoint is not None:
            return self.waypoint.peer
        namespace, _, name = self.service.partition("/")
        return Peer(f"{PREFIX}{name}", namespace, Peer.unknown().principal)

    def meta(self) -> EndpointMeta | None:
        """The waypoint as an endpoint the mTLS layer tunnels to (``node`` = how to reach it)."""
        if self.waypoint is None:
            return None
        return dataclasses.replace(self.waypoint, placement=WAYPOINT_PLACEMENT,
                                   node=f"{VIA_WAYPOINT}{self.waypoint.ip}:{self.port}")


class _Cache:
    tables: object = None
    hops: dict[str, SidecarHop] = {}  # noqa: RUF012 - replaced whole, never mutated


_cache = _Cache()


def _hops(tables: Tables) -> dict[str, SidecarHop]:
    """Served Service → hop, from the ``waypoint-<svc>`` Services with a 15008 port; the
    Service this pod is the waypoint of is left out (its streams go on to the pods)."""
    own = _served(tables)
    hops: dict[str, SidecarHop] = {}
    for key, entry in tables.services.items():
        namespace, _, name = key.partition("/")
        port = entry.ports.get(TUNNEL_PORT)
        served = f"{namespace}/{name.removeprefix(PREFIX)}"
        if port is None or not name.startswith(PREFIX) or served == own:
            continue
        pod = next((e for e in entry.endpoints if e.service_account == WAYPOINT_SERVICE_ACCOUNT),
                   None)
        hops[served] = SidecarHop(served, pod, port.target_port)
    return hops


def _served(tables: Tables) -> str | None:
    """hbone_waypoint.served_service (not imported: that module imports outbound.py)."""
    labels = (tables.snapshot.get("pod") or {}).get("labels") or {}
    name = labels.get(WAYPOINT_LABEL)
    return f"{tables.pod.namespace}/{name}" if name else None


def waypoint_hop(tables: Tables, service: str) -> SidecarHop | None:
    """The waypoint of Service ``service`` (``ns/name``), None if it has none."""
    if _cache.tables is not tables:
        _cache.hops = _hops(tables)
        _cache.tables = tables
    return _cache.hops.get(service)


def pick_via(hop: SidecarHop, vip: EndpointKey) -> tuple[EndpointKey, Peer] | None:
    """An opaque connection's upstream: the cluster IP itself (the CONNECT authority), which
    :func:`via_meta` sends through the waypoint; None (refused) without a ready waypoint."""
    return (vip, hop.peer) if hop.waypoint is not None else None


def plan_via(hop: SidecarHop, sp: ServicePort, vip: EndpointKey) -> Plan:
    """Every request to the Service: fixed to the cluster IP, through the waypoint (which
    applies the routes, retries and timeouts); ProxyError ``no-waypoint`` if none is ready."""
    if hop.waypoint is None:
        raise ProxyError(Reason.NO_WAYPOINT, f"{sp.fqdn}:{sp.port}",
                         f"no ready endpoint of waypoint-{sp.service.partition('/')[2]}")
    return Plan(service=sp.fqdn, destination=f"{sp.fqdn}:{sp.port}", route=None,
                retry=NO_RETRY, request_timeout_s=None, backend_timeout_s=None, fixed=vip,
                fixed_peer=hop.peer, app_protocol=sp.app_protocol)


def via_meta(tables: Tables, key: EndpointKey) -> EndpointMeta | None:
    """For the mTLS layer: the waypoint to tunnel through when ``key`` is a waypointed
    Service's cluster IP and port (None: not one). Not ready: an endpoint without address,
    which the HBONE dialer refuses (``no-waypoint``) rather than letting it go plaintext."""
    sp = tables.by_vip.get(key)
    hop = waypoint_hop(tables, sp.service) if sp is not None else None
    if hop is None:
        return None
    meta = hop.meta()
    if meta is not None:
        return meta
    namespace, _, name = hop.service.partition("/")
    return _unready(namespace, name)


def _unready(namespace: str, name: str) -> EndpointMeta:
    from hybridmesh.proxy.discovery import EndpointMeta

    return EndpointMeta(ip="", pod="", namespace=namespace, workload=f"{PREFIX}{name}",
                        service_account=WAYPOINT_SERVICE_ACCOUNT,
                        placement=WAYPOINT_PLACEMENT, node=VIA_WAYPOINT,
                        peer=Peer(f"{PREFIX}{name}", namespace, Peer.unknown().principal))
