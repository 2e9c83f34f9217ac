"""A node pod's connection to a sidecar pod: an HBONE stream to the sidecar, as the source pod.

The sidecar engine accepts HBONE on its pod's port 15008 (proxy/hbone_server.py): each CONNECT
stream becomes an inbound connection authenticated as the *tunnel's* identity, with protocol
detection, L7 AuthorizationPolicy (methods, paths: a DENY answers 403 naming the policy) and
request metrics. So the node proxy does not relay the pod's bytes opaquely over mTLS (ALPN
``hm-tcp``, which the sidecar can judge only by principal): it opens ``CONNECT <pod ip>:<port>``
to ``<pod ip>:15008`` in the tunnel of (source pod identity, destination pod), presenting the
source pod's SVID, one TLS connection per such pair, reused by every connection between them
(``tunnels.TunnelPool``, the same client that dials node proxies and waypoints).

Secure naming: the server must prove exactly the endpoint's identity (its service account in
its namespace); anything else (a reused IP, an imposter) is refused before a byte of the pod's
is sent (``tunnel-peer-auth``). The sidecar's own proxy ports stay plaintext (outbound.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hybridmesh.agent.nodeproxy.tunnel import sni_name
from hybridmesh.agent.nodeproxy.tunnels import TunnelDialError
from hybridmesh.proxy.peer_identity import with_principal

if TYPE_CHECKING:
    from hybridmesh.agent.nodeproxy.outbound import _Flow
    from hybridmesh.agent.nodeproxy.view import Destination
    from hybridmesh.identity.spiffe import SpiffeId
    from hybridmesh.proxy.identity import TlsMaterial

__all__ = ["via_sidecar"]

log = logging.getLogger(__name__)


async def via_sidecar(flow: _Flow, dest: Destination, server: SpiffeId,
                      source: tuple[SpiffeId, TlsMaterial]) -> None:
    """Open the CONNECT stream to the sidecar pod at ``dest`` (which must prove ``server``)
    with ``source`` = (the source pod's identity, its material), then let ``flow`` bridge it
    (or refuse) as for a node-to-node stream."""
    identity, material = source
    flow.dest_peer = with_principal(flow.dest_peer, server)
    assert flow.pod is not None
    ctx = flow.ctx
    try:
        conn = await ctx.pool.get((identity, f"pod:{dest.ip}"),
                                  (dest.ip, ctx.sidecar_hbone_port(dest.ip)), material,
                                  frozenset({server}), sni_name(server))
    except TunnelDialError as exc:
        log.info("HBONE to sidecar %s:%d for %s: %s", dest.ip, dest.port, identity, exc)
        return flow._refuse(exc.reason)
    if flow.down.is_closing():
        return flow._release()
    conn.open((dest.ip, dest.port), flow.pod.key,
              lambda sid, reason: flow._opened(conn, sid, reason))
    return None
