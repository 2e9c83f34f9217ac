"""The destination side: a CONNECT stream from another node proxy, to one of this node's pods.

Every stream on a tunnel connection is authorized as the connection's *verified* client
identity (the source workload's SVID), never as anything the stream says: the
``hm-source-pod`` header is for logs only. Checks, in order: the proxy is not draining → the
authority is ``ip:port`` → the address is a ``node`` pod of this node (a tunnel cannot be used
to reach anything else: no open relay) → AuthorizationPolicy of that pod for (identity, port)
→ the identity's stream budget → connect to the pod, then ``200``. Any failure answers the
stream with its status and ``hm-proxy-error`` (see :mod:`tunnel`) and nothing reaches the pod.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from hybridmesh.agent.nodeproxy._tunnelio import StreamBridge, TunnelConn
from hybridmesh.agent.nodeproxy.context import NodeContext
from hybridmesh.agent.nodeproxy.tunnel import TunnelRequestError, answer, parse_authority, refuse
from hybridmesh.agent.nodeproxy.view import LocalPod, NodeView
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.policy import RequestAttributes
from hybridmesh.proxy.protocols.http2 import H2Server, RequestHeaders
from hybridmesh.telemetry.proxy_metrics import REPORTER_DESTINATION, Peer

__all__ = ["authorize_stream", "on_request"]

log = logging.getLogger(__name__)


def authorize_stream(view: NodeView, peer: SpiffeId | None, authority: bytes
                     ) -> tuple[LocalPod, int]:
    """The local pod and port a CONNECT may reach, or :class:`TunnelRequestError`."""
    ip, port = parse_authority(authority)
    pod = view.local_by_ip.get(ip)
    if pod is None:
        raise TunnelRequestError("not-local", f"{ip} is not a node pod of {view.node}")
    decision = view.evaluator(pod).decide(RequestAttributes.tcp(peer, port))
    if not decision.allowed:
        raise TunnelRequestError("policy", decision.reason)
    return pod, port


def on_request(ctx: NodeContext, conn: TunnelConn, ev: RequestHeaders) -> None:
    """Handle one CONNECT (called from the tunnel connection's read callback)."""
    assert isinstance(conn.h2, H2Server)
    view, started = ctx.view, time.monotonic()
    source = view.peer_of(conn.peer) if view is not None else Peer.unknown()
    try:
        if ctx.draining or view is None:
            raise TunnelRequestError("draining", "node proxy is handing over")
        if ev.method != b"CONNECT":
            raise TunnelRequestError("bad-request", "only CONNECT is served on the tunnel port")
        pod, port = authorize_stream(view, conn.peer, ev.authority)
    except TunnelRequestError as exc:
        log.info("tunnel stream from %s refused: %s", conn.peer, exc)
        _attempt(ctx, (source, Peer.unknown(), started), ok=False)
        return _refuse(ctx, conn, ev.stream_id, exc.reason, source)
    budget = str(conn.peer)
    refused = ctx.inbound_limits.acquire_stream(budget)
    if refused is not None:
        _attempt(ctx, (source, pod.peer, started), ok=False)
        return _refuse(ctx, conn, ev.stream_id, refused, source)
    ctx.active += 1
    dest = pod.peer
    metrics = ctx.metrics.proxy
    service = ""

    def closed(bridge: StreamBridge) -> None:
        ctx.inbound_limits.release_stream(budget)
        ctx.active -= 1
        metrics.tcp_close(reporter=REPORTER_DESTINATION, source=source, destination=dest,
                          service=service, read_bytes=bridge.written_bytes,
                          write_bytes=bridge.read_bytes)

    bridge = conn.bridge(ev.stream_id, closed)
    metrics.tcp_open(reporter=REPORTER_DESTINATION, source=source, destination=dest,
                     service=service)
    ctx.tasks.spawn(_connect(ctx, conn, bridge, (pod.ip, port), (source, dest, started)),
                    name="hm-node-in")
    return None


def _attempt(ctx: NodeContext, edge: tuple[Peer, Peer, float], *, ok: bool) -> None:
    """Count a stream's outcome on (source, destination, started) for ``stat``."""
    source, dest, started = edge
    ctx.metrics.connect((REPORTER_DESTINATION, source, dest, ""), ok=ok,
                        elapsed_s=time.monotonic() - started)


async def _connect(ctx: NodeContext, conn: TunnelConn, bridge: StreamBridge,
                   addr: tuple[str, int], edge: tuple[Peer, Peer, float]) -> None:
    source = edge[0]
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx.config.mark is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, ctx.config.mark)
    try:
        async with asyncio.timeout(ctx.config.connect_timeout_s):
            await loop.sock_connect(sock, addr)
            await loop.create_connection(lambda: bridge, sock=sock)
    except (OSError, TimeoutError):
        sock.close()
        ctx.metrics.refuse("connect-failed", source)
        _attempt(ctx, edge, ok=False)
        assert isinstance(conn.h2, H2Server)
        refuse(conn.h2, bridge.sid, "connect-failed")
        conn.flush()
        bridge.on_reset()
        return
    _attempt(ctx, edge, ok=True)
    assert isinstance(conn.h2, H2Server)
    answer(conn.h2, bridge.sid)
    conn.flush()


def _refuse(ctx: NodeContext, conn: TunnelConn, sid: int, reason: str, source: Peer) -> None:
    ctx.metrics.refuse(reason, source)
    assert isinstance(conn.h2, H2Server)
    refuse(conn.h2, sid, reason)
