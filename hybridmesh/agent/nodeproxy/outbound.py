"""The source side: a pod's steered connection, from accept to a relay, a tunnel or a refusal.

Order of checks, cheapest first, each failing closed (the connection is reset, nothing is sent
on the pod's behalf): source from the kernel (:mod:`source`) → the pod is one this proxy serves
→ the source workload's connection budget (:mod:`limits`) → its SVID → the destination:

- a ``node`` pod on this node: authorized here by the source's identity (the destination's
  policies, the engine of ``hybridmesh.policy``), then a plain local connection — no tunnel;
- a ``node`` pod on another node: a CONNECT stream in the tunnel of (source identity, node);
- a ``sidecar``/``sidecar+ebpf`` pod: an HBONE stream to the pod's 15008 with the source pod's
  SVID, the server verified as the endpoint's identity, so the sidecar applies L7 policy and
  counts requests as the real caller (:mod:`sidecar`); its proxy's own ports: plain TCP;
- anything else (a ``kernel``/``none`` pod, an address outside the mesh): plain TCP from the
  source pod's own network namespace, as the pod would have connected without the mesh (see
  docs/node.md §4 "mixing placements").
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Final, cast

from hybridmesh.agent.nodeproxy._tunnelio import StreamBridge, TunnelConn
from hybridmesh.agent.nodeproxy.context import NodeContext
from hybridmesh.agent.nodeproxy.sidecar import via_sidecar
from hybridmesh.agent.nodeproxy.tunnel import sni_name
from hybridmesh.agent.nodeproxy.tunnels import TunnelDialError
from hybridmesh.agent.nodeproxy.upstream import MESHED_PLACEMENTS, DialError, dial_plain
from hybridmesh.agent.nodeproxy.view import Destination, LocalPod, NodeView, Remote
from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId
from hybridmesh.policy import RequestAttributes
from hybridmesh.proxy.hbone_via import via_waypoint, waypoint_of
from hybridmesh.proxy.identity import TlsMaterial
from hybridmesh.proxy.mtls import PEER_PROXY_PORTS
from hybridmesh.proxy.relay import Relay
from hybridmesh.telemetry.proxy_metrics import REPORTER_DESTINATION, REPORTER_SOURCE, Peer

__all__ = ["Accepted", "decide_local"]

log = logging.getLogger(__name__)
_BOTH: Final = (REPORTER_SOURCE, REPORTER_DESTINATION)


def _node_socket(_namespace: str, _pod: str) -> socket.socket:
    """Same-node relays to a node pod leave from the node netns (the proxy's own address)."""
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


class Accepted(asyncio.Protocol):
    """Holds an accepted pod connection until it is handled: reading is paused, and whatever
    arrives anyway (asyncio's selector loop starts reading after ``connection_made``) is kept
    for the relay or tunnel stream that takes over."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.buffered: list[bytes] = []
        self.eof = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = tcp = cast(asyncio.Transport, transport)  # uvloop: not a subclass
        tcp.pause_reading()
        _Flow(self.ctx, tcp, self).start()

    def data_received(self, data: bytes) -> None:
        self.buffered.append(data)
        if self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return True  # keep our side open: the answer may still come

    def take(self) -> bytes:
        data, self.buffered = b"".join(self.buffered), []
        return data


def decide_local(view: NodeView, source: SpiffeId, dest: LocalPod, port: int) -> str | None:
    """Same-node authorization: None if allowed, else the reason (the deciding policy)."""
    decision = view.evaluator(dest).decide(RequestAttributes.tcp(source, port))
    return None if decision.allowed else decision.reason


class _Flow:
    """One pod connection through the node proxy."""

    def __init__(self, ctx: NodeContext, transport: asyncio.Transport,
                 holder: Accepted) -> None:
        self.ctx = ctx
        self.down = transport
        self.holder = holder
        self.pod: LocalPod | None = None
        self.source = Peer.unknown()
        self.dest_peer = Peer.unknown()
        self.service = ""
        self._budget: str | None = None
        self._counted = False
        self._opened_relay = False
        self._reporters: tuple[str, ...] = (REPORTER_SOURCE,)
        self._started = time.monotonic()
        self._attempted = False

    def start(self) -> None:
        ctx, view = self.ctx, self.ctx.view
        if view is None or ctx.draining:
            return self._refuse("not-ready")
        peer, local = self.down.get_extra_info("peername"), self.down.get_extra_info("sockname")
        steered = ctx.resolver.resolve((peer[0], peer[1]), (local[0], local[1]))
        pod = view.pods.get(steered.pod) if steered is not None else None
        if steered is None or pod is None or pod.placement != "node":
            return self._refuse("unresolved-source")
        self.pod = pod
        identity = pod.identity(view.trust_domain)
        self.source = Peer(pod.workload, pod.namespace, str(identity) if identity else "unknown")
        budget = f"{pod.namespace}/{pod.workload}"
        refused = ctx.outbound_limits.acquire_connection(budget)
        if refused is not None:
            return self._refuse(refused)
        self._budget = budget
        material = ctx.identities.material(pod.key)
        if material is None or identity is None:
            return self._refuse("no-identity")
        self.service, candidates = view.destinations(*steered.destination)
        if (hop := waypoint_of(view, self.service)) is not None:  # L7: via its waypoint
            ctx.active += 1
            self._counted = True
            ctx.tasks.spawn(via_waypoint(self, hop, identity, material, steered.destination),
                            name="hm-node-waypoint")
            return None
        if not candidates:
            return self._refuse("no-endpoints")
        dest = candidates[ctx.rng.randrange(len(candidates))]
        ctx.active += 1
        self._counted = True
        self._route(view, identity, material, dest)
        return None

    def _route(self, view: NodeView, identity: SpiffeId, material: TlsMaterial,
               dest: Destination) -> None:
        remote = dest.pod
        if remote is not None:
            self.dest_peer = remote.peer
        if remote is None or remote.placement != "node":
            meshed = remote is not None and remote.placement in MESHED_PLACEMENTS and not (
                not dest.service and dest.port in PEER_PROXY_PORTS)  # its proxy's own ports
            expected = self._expected(view, remote) if meshed else None
            if meshed and expected is None:
                return self._refuse("peer-identity")
            if expected is not None:  # a sidecar: HBONE as the source pod (sidecar.py)
                self.ctx.tasks.spawn(via_sidecar(self, dest, expected, (identity, material)),
                                     name="hm-node-sidecar")
                return None
            self._relay(dest)
        elif remote.node == view.node:
            # the only proxy on this edge reports it as both ends (Istio's reporter=source
            # and reporter=destination): stat --from reads one, --to and plain stat the other
            self._reporters = _BOTH
            local = view.local_by_ip.get(dest.ip)
            denied = "not-local" if local is None else decide_local(view, identity, local,
                                                                    dest.port)
            if denied is not None:
                log.info("same-node %s -> %s:%d denied: %s", identity, dest.ip, dest.port, denied)
                return self._refuse("policy" if local is not None else "not-local")
            self._relay(dest)
        else:
            self.ctx.tasks.spawn(self._tunnel(view, identity, material, dest),
                                 name="hm-node-tunnel-open")
        return None

    def _expected(self, view: NodeView, remote: Remote | None) -> SpiffeId | None:
        """Secure naming for a sidecar destination: its service account's identity."""
        if remote is None:
            return None
        try:
            return SpiffeId.for_workload(view.trust_domain, remote.namespace,
                                         remote.service_account)
        except InvalidSpiffeId:
            return None

    # -- relay (same node, or to another placement) -------------------------------------------
    def _relay(self, dest: Destination) -> None:
        if self.down.is_closing():
            return self._release()
        relay = Relay(self._closed)
        relay.start_downstream(self.down, self.holder.take())
        if self.holder.eof:
            relay.downstream_eof()
        self.ctx.tasks.spawn(self._dial(relay, dest), name="hm-node-dial")
        return None

    async def _dial(self, relay: Relay, dest: Destination) -> None:
        ctx, pod = self.ctx, self.pod
        assert pod is not None
        addr, mark, timeout = (dest.ip, dest.port), ctx.config.mark, ctx.config.connect_timeout_s
        make, source = (_node_socket, ("", "")) if self._reporters is _BOTH else \
            (ctx.source_socket, (pod.namespace, pod.name))  # same-node node pod: node netns
        try:
            await dial_plain(make, source, addr, lambda: relay.up, mark=mark, timeout=timeout)
        except DialError as exc:
            log.info("%s -> %s:%d: %s", pod.key, dest.ip, dest.port, exc)
            ctx.metrics.refuse(exc.reason, self.source)
            self._attempt(ok=False)
            relay.abort()
            return
        if relay.down.lost:
            relay.abort()
            return
        for reporter in self._reporters:
            ctx.metrics.proxy.tcp_open(reporter=reporter, source=self.source,
                                       destination=self.dest_peer, service=self.service)
        self._opened_relay = True
        self._attempt(ok=True)
        relay.upstream_connected()

    def _closed(self, read: int, written: int) -> None:
        if self._opened_relay:
            for reporter in self._reporters:  # bytes as the caller sent / was sent them
                self.ctx.metrics.proxy.tcp_close(
                    reporter=reporter, source=self.source, destination=self.dest_peer,
                    service=self.service, read_bytes=read, write_bytes=written)
        self._release()

    # -- tunnel ---------------------------------------------------------------------------------
    async def _tunnel(self, view: NodeView, identity: SpiffeId, material: TlsMaterial,
                      dest: Destination) -> None:
        assert dest.pod is not None and self.pod is not None
        node = dest.pod.node
        address = self.ctx.tunnel_address(node)
        if address is None:
            return self._refuse("no-route-to-node")
        expected = view.identities_on(node)
        remote_id = SpiffeId.for_workload(view.trust_domain, dest.pod.namespace,
                                          dest.pod.service_account)
        try:
            conn = await self.ctx.pool.get((identity, node), (address, self.ctx.config.tunnel[1]),
                                           material,
                                           expected, sni_name(remote_id))
        except TunnelDialError as exc:
            log.warning("tunnel to %s for %s: %s", node, identity, exc)
            return self._refuse(exc.reason)
        if self.down.is_closing():
            return self._release()
        conn.open((dest.ip, dest.port), self.pod.key, lambda sid, r: self._opened(conn, sid, r))
        return None

    def _opened(self, conn: TunnelConn, sid: int, reason: str | None) -> None:
        if reason is not None:
            return self._refuse(reason)
        if self.down.is_closing():
            conn.reset(sid)
            return self._release()
        self.ctx.metrics.proxy.tcp_open(reporter=REPORTER_SOURCE, source=self.source,
                                        destination=self.dest_peer, service=self.service)
        self._attempt(ok=True)
        conn.bridge(sid, self.bridged).attach(self.down, self.holder.take(), self.holder.eof)
        return None

    # -- endings --------------------------------------------------------------------------------
    def _attempt(self, *, ok: bool) -> None:
        """Count the attempt once, on its edge, when its source is known (stat's signals)."""
        if self._attempted or self.pod is None:
            return
        self._attempted = True
        elapsed = time.monotonic() - self._started
        for reporter in self._reporters:
            self.ctx.metrics.connect((reporter, self.source, self.dest_peer, self.service),
                                     ok=ok, elapsed_s=elapsed)

    def _refuse(self, reason: str) -> None:
        self.ctx.metrics.refuse(reason, self.source)
        self._attempt(ok=False)
        if not self.down.is_closing():
            self.down.abort()
        self._release()

    def _release(self) -> None:
        if self._budget is not None:
            self.ctx.outbound_limits.release_connection(self._budget)
            self._budget = None
        if self._counted:
            self._counted = False
            self.ctx.active -= 1

    def bridged(self, bridge: StreamBridge) -> None:
        """Tunnel stream closed: count it like a relay close."""
        self.ctx.metrics.proxy.tcp_close(
            reporter=REPORTER_SOURCE, source=self.source, destination=self.dest_peer,
            service=self.service, read_bytes=bridge.read_bytes, write_bytes=bridge.written_bytes)
        self._release()
