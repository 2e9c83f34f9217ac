"""The node proxy's side of waypoints: a steered connection to a Service that has one.

When a ``node`` pod connects to a Service that needs L7 (control/waypoints.py), the node proxy
does not pick an endpoint: it opens a CONNECT stream to the Service's waypoint pod on its
HBONE port, ``:authority`` = the Service's cluster IP and port, in the tunnel of the *source
pod's* identity (as for any tunnel, one TLS connection per (identity, waypoint)). The waypoint
proves it is the Service's waypoint with its SVID (``spiffe://<td>/ns/<ns>/sa/waypoint``);
it applies routes and L7 policy to the caller's identity and carries the stream onward.

The waypoint is found in the node snapshot as the ready endpoint of the Service
``waypoint-<svc>`` (port 15008) the control plane adds next to it, cached per snapshot view.
Without a ready waypoint the connection is refused (``no-waypoint``): L7 policy is never
skipped by going around it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from hybridmesh.agent.nodeproxy.tunnel import sni_name
from hybridmesh.agent.nodeproxy.tunnels import TunnelDialError
from hybridmesh.control.model import WAYPOINT_SERVICE_ACCOUNT
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.proxy.config import TUNNEL_PORT
from hybridmesh.telemetry.proxy_metrics import Peer

if TYPE_CHECKING:
    from hybridmesh.agent.nodeproxy.outbound import _Flow
    from hybridmesh.agent.nodeproxy.view import NodeView
    from hybridmesh.proxy.identity import TlsMaterial

__all__ = ["WaypointHop", "via_waypoint", "waypoint_of"]

log = logging.getLogger(__name__)

PREFIX: Final = "waypoint-"
_NONE: Final[dict[str, WaypointHop]] = {}


@dataclass(frozen=True, slots=True)
class WaypointHop:
    """Where a Service's traffic goes first."""

    service: str  # "ns/name"
    pod: str  # "ns/waypoint-<svc>-0"
    ip: str
    port: int  # its HBONE port (the Service's targetPort: 15008)
    ready: bool
    identity: SpiffeId

    @property
    def peer(self) -> Peer:
        workload = f"{PREFIX}{self.service.partition('/')[2]}"
        return Peer(workload, self.identity.namespace or "", str(self.identity))


class _Cache:
    view: object = None
    hops: dict[str, WaypointHop] = _NONE


_cache = _Cache()


def _hops(view: NodeView) -> dict[str, WaypointHop]:
    """Service key → waypoint, from the ``waypoint-<svc>`` Services (port 15008) and their
    ready endpoints; no ready endpoint: a hop that is not ready."""
    hops: dict[str, WaypointHop] = {}
    for (_ip, port), (key, target, endpoints) in view.vips.items():
        namespace, _, name = key.partition("/")
        if port != TUNNEL_PORT or not name.startswith(PREFIX):
            continue
        served = f"{namespace}/{name.removeprefix(PREFIX)}"
        identity = SpiffeId.for_workload(view.trust_domain, namespace, WAYPOINT_SERVICE_ACCOUNT)
        pod = next((e for e in endpoints if e.service_account == WAYPOINT_SERVICE_ACCOUNT),
                   None)
        hops[served] = WaypointHop(served, f"{namespace}/{pod.pod}" if pod else "",
                                   pod.ip if pod else "", target, pod is not None, identity)
    return hops


def waypoint_of(view: NodeView, service: str) -> WaypointHop | None:
    """The waypoint of Service ``service`` (``ns/name``; "" for a pod address: None)."""
    if not service:
        return None
    if _cache.view is not view:
        _cache.hops = _hops(view)
        _cache.view = view
    return _cache.hops.get(service)


async def via_waypoint(flow: _Flow, hop: WaypointHop, identity: SpiffeId,
                       material: TlsMaterial, vip: tuple[str, int]) -> None:
    """Open the stream to ``hop`` for ``flow`` (the node proxy's steered connection), then
    let the flow bridge it (or refuse) exactly as for a node-to-node stream."""
    flow.dest_peer = hop.peer
    if not hop.ready:
        return flow._refuse("no-waypoint")
    assert flow.pod is not None
    try:
        conn = await flow.ctx.pool.get((identity, f"waypoint:{hop.service}"),
                                       (hop.ip, hop.port), material,
                                       frozenset({hop.identity}), sni_name(hop.identity))
    except TunnelDialError as exc:
        log.warning("waypoint %s for %s: %s", hop.pod, identity, exc)
        return flow._refuse(exc.reason)
    if flow.down.is_closing():
        return flow._release()
    conn.open(vip, flow.pod.key, lambda sid, reason: flow._opened(conn, sid, reason))
    return None
