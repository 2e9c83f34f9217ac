"""Mutual TLS between meshed proxies, the outbound half: which hops are mTLS, and dialling them.

A hop is mTLS when the chosen endpoint runs a proxy (its snapshot ``placement`` is a sidecar
one, or ``node``: its node proxy answers, through an HBONE CONNECT stream, hbone.py) and this
proxy has an identity configured (``--token-file``). Then:

- the connection is TLS 1.3 with the cached client context of the current SVID, offering
  exactly one ALPN protocol (``http/1.1`` for the keep-alive pool, ``h2`` for the multiplexed
  one, ``hm-tcp`` for opaque relays);
- after the handshake the server's SPIFFE ID must be the identity of the endpoint's service
  account in the endpoint's namespace, from the snapshot (secure naming); otherwise the
  connection is dropped before a byte of the request is written (``connect-peer-auth``, 502,
  retried elsewhere like a failed connect);
- with no valid SVID (the CA unreachable past expiry) the request fails closed with 503
  ``no-identity``: never plaintext to a meshed peer.

Handshakes cost ~2.4 ms of CPU, so mTLS connections live in their own pools (keyed like the
plaintext ones by endpoint): a keep-alive request pays none. Pools survive rotation; a pooled
connection keeps the certificates it was made with, as in Istio.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

from hybridmesh.identity.spiffe import InvalidSpiffeId, SpiffeId
from hybridmesh.identity.tls import PeerIdentityError, check_peer
from hybridmesh.proxy._tlsread import read_buffered
from hybridmesh.proxy.config import ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT, TUNNEL_PORT
from hybridmesh.proxy.discovery import EndpointMeta, Tables
from hybridmesh.proxy.errors import ProxyError, Reason
from hybridmesh.proxy.h2pool import H2Pool
from hybridmesh.proxy.hbone_sidecar import WAYPOINT_PLACEMENT, via_meta
from hybridmesh.proxy.identity import ALPN_H1, ALPN_H2, SvidManager
from hybridmesh.proxy.peer_identity import with_principal
from hybridmesh.proxy.plan import Plan
from hybridmesh.proxy.upstream import ConnectFailed, Connector, EndpointKey, Pool, open_socket
from hybridmesh.telemetry.proxy_metrics import Peer

if TYPE_CHECKING:
    from hybridmesh.proxy.context import ProxyContext
    from hybridmesh.proxy.hbone import HboneDialer

__all__ = ["MESHED_PLACEMENTS", "PEER_PROXY_PORTS", "MeshTls", "UpstreamChoice"]

log = logging.getLogger(__name__)

MESHED_PLACEMENTS: Final = frozenset(("sidecar", "sidecar+ebpf"))
PEER_PROXY_PORTS: Final = frozenset((ADMIN_PORT, 15021, TUNNEL_PORT, OUTBOUND_PORT,
                                     INBOUND_PORT))
"""Every mesh proxy's own ports (the lab's capture exempts them): plaintext, never wrapped."""
_PROXIED: Final = MESHED_PLACEMENTS | {"node"}  # node: its node proxy answers (hbone.py)
_VIA: Final = frozenset(("node", WAYPOINT_PLACEMENT))  # reached by HBONE (hbone.py)
STRICT: Final = "STRICT"
_CHOICES_MAX: Final = 4096
P = TypeVar("P", bound=asyncio.Protocol)

UpstreamChoice = tuple[Pool, H2Pool, Peer | None]
"""The pools a request uses and, for mTLS, the destination peer with its verified principal."""


class MeshTls:
    """One worker's mTLS state: the SVID manager, the mTLS pools, the metrics."""

    def __init__(self, ctx: ProxyContext, identity: SvidManager) -> None:
        self._ctx = ctx
        self.identity = identity
        self.metrics = identity.metrics
        self._pools: dict[tuple[SpiffeId, str | None], tuple[Pool, H2Pool]] = {}
        self._mode: tuple[Tables | None, str] = (None, STRICT)
        self._expected: dict[EndpointMeta, SpiffeId | None] = {}
        self._choices: dict[tuple[EndpointKey, object, Peer | None],
                            UpstreamChoice | str | None] = {}
        self._choices_for: Tables | None = None
        self.handshakes = 0
        self._hbone: HboneDialer | None = None

    @property
    def hbone(self) -> HboneDialer:
        """Tunnels to node proxies (``node`` endpoints: hbone.py), made at first use."""
        if self._hbone is None:
            from hybridmesh.proxy.hbone import HboneDialer

            self._hbone = HboneDialer(self._ctx, self.identity)
        return self._hbone

    # -- modes and peers ------------------------------------------------------------------------
    def strict(self, tables: Tables) -> bool:
        """STRICT: inbound plaintext is refused (the snapshot's ``mesh.mtlsMode``)."""
        cached_for, mode = self._mode
        if cached_for is not tables:
            mesh = tables.snapshot.get("mesh") or {}
            mode = str(mesh.get("mtlsMode") or STRICT).upper()
            self._mode = (tables, mode)
        return mode == STRICT

    def meshed_peer(self, key: EndpointKey, plan: Plan | None = None) -> EndpointMeta | None:
        """The endpoint's snapshot entry if another proxy answers there (the hop must be
        mTLS). Our own pod's address is the app behind us (inbound, or the app calling its
        own IP): never wrapped."""
        tables = self._ctx.tables
        if tables is None or key[0] == tables.pod.ip:
            return None
        if (via := via_meta(tables, key)) is not None:  # a Service's waypoint (hbone_sidecar)
            return via
        meta = None
        if plan is not None and plan.balancer is not None:
            meta = plan.balancer.meta.get(key)
        if meta is None:  # passthrough to a pod IP: mTLS too, except to the peer proxy's own
            if key[1] in PEER_PROXY_PORTS:  # ports (admin, probes), which capture exempts
                return None
            meta = tables.by_ip.get(key[0])
        return meta if meta is not None and meta.placement in _PROXIED else None

    def expected_identity(self, meta: EndpointMeta) -> SpiffeId | None:
        """Secure naming: the one identity that may answer for this endpoint."""
        if meta in self._expected:
            return self._expected[meta]
        tables, wanted = self._ctx.tables, None
        trust_domain = str((tables.snapshot.get("mesh") or {}).get("trustDomain") or "") \
            if tables is not None else ""
        try:
            wanted = SpiffeId.for_workload(trust_domain, meta.namespace, meta.service_account)
        except InvalidSpiffeId:
            wanted = None
        if len(self._expected) > 50_000:
            self._expected.clear()
        self._expected[meta] = wanted
        return wanted

    # -- choosing pools -------------------------------------------------------------------------
    def upstream(self, plan: Plan, key: EndpointKey) -> UpstreamChoice | None:
        """mTLS pools for a meshed endpoint (None: plaintext); ProxyError when we have no
        valid identity (fail closed).

        Which pools and which principal depend only on the snapshot, the endpoint and the
        plan's endpoint data (its balancer, or its fixed peer): remembered per snapshot, so
        a request pays one dict hit. Our own SVID is checked on every request (expiry and
        rotation must not wait for a snapshot)."""
        tables = self._ctx.tables
        if tables is not self._choices_for:
            self._choices, self._choices_for = {}, tables
        memo = (key, plan.balancer, plan.fixed_peer)
        choice = self._choices.get(memo, _Miss.MISS)
        if choice is _Miss.MISS:
            choice = self._choose(plan, key)
            if len(self._choices) >= _CHOICES_MAX:  # passthrough keys are the client's
                self._choices.clear()
            self._choices[memo] = choice
        if choice is None:
            return None
        if self.identity.material is None:
            self.metrics.refuse("source", "no-identity")
            raise ProxyError(Reason.NO_IDENTITY, f"{plan.destination} via {key[0]}:{key[1]}",
                             self.identity.last_error or "no certificate issued yet")
        if isinstance(choice, str):
            raise ProxyError(Reason.PEER_AUTH, f"{plan.destination} via {key[0]}:{key[1]}",
                             choice)
        return choice

    def _choose(self, plan: Plan, key: EndpointKey) -> UpstreamChoice | str | None:
        """:meth:`upstream` computed afresh: None (plaintext), the pools and peer, or why
        the endpoint has no valid identity."""
        meta = self.meshed_peer(key, plan)
        if meta is None:
            return None
        expected = self.expected_identity(meta)
        if expected is None:
            return f"no valid identity for {meta.namespace}/{meta.service_account}"
        pool, h2pool = self._pools_for(expected, _via_node(meta))
        return pool, h2pool, with_principal(plan.peer(key), expected)

    def _pools_for(self, expected: SpiffeId, node: str | None) -> tuple[Pool, H2Pool]:
        """Pools per expected server identity: a connection verified as X is never reused
        for an endpoint the snapshot now says must be Y (secure naming survives updates)."""
        pools = self._pools.get((expected, node))
        if pools is None:
            timeout, mark = self._ctx.config.connect_timeout_s, self._ctx.mark
            pools = self._pools[(expected, node)] = (
                Pool(mark=mark, connect_timeout=timeout,
                     connector=self._dialer(ALPN_H1, expected, node)),
                H2Pool(mark=mark, connect_timeout=timeout,
                       connector=self._dialer(ALPN_H2, expected, node)))
        return pools

    # -- dialling ---------------------------------------------------------------------------------
    def _dialer(self, alpn: str, expected: SpiffeId, node: str | None) -> Connector:
        async def dial(key: EndpointKey, factory: Callable[[], P], *, mark: int | None,
                       timeout: float) -> tuple[asyncio.Transport, P]:
            return await self.connect(key, factory, alpn, expected, mark=mark,
                                      timeout=timeout, node=node)

        return dial

    async def dial_tcp(self, key: EndpointKey, factory: Callable[[], P]
                       ) -> tuple[asyncio.Transport, P, Peer | None] | None:
        """An opaque relay's upstream: mTLS (ALPN ``hm-tcp``) when a proxy answers at
        ``key``, else None (dial plaintext). The peer carries the verified principal."""
        meta = self.meshed_peer(key)
        if meta is None:
            return None
        expected = self.expected_identity(meta)
        if expected is None:
            raise ConnectFailed(key, "mTLS: no valid identity for the endpoint",
                                reason=Reason.PEER_AUTH.value)
        transport, proto = await self.connect(key, factory, None, expected, mark=self._ctx.mark,
                                              timeout=self._ctx.config.connect_timeout_s,
                                              node=_via_node(meta))
        return transport, proto, with_principal(meta.peer, expected)

    async def connect(self, key: EndpointKey, factory: Callable[[], P], alpn: str | None,
                      expected: SpiffeId, *, mark: int | None, timeout: float,
                      node: str | None = None) -> tuple[asyncio.Transport, P]:
        """A verified mTLS connection to ``key``; ConnectFailed (``connect-peer-auth``) if the
        handshake fails or the server is not ``expected`` (secure naming). With ``node``: a
        CONNECT stream through that node's proxy instead (hbone.py)."""
        if node is not None:
            return await self.hbone.connect(key, factory, expected, node, timeout=timeout)
        material = self.identity.material
        if material is None:
            raise ConnectFailed(key, "mTLS: no valid certificate of our own",
                                reason=Reason.PEER_AUTH.value)
        sock = await open_socket(key, mark=mark, timeout=timeout)
        transport, holder = await self._handshake(key, sock, material.client(alpn), timeout)
        try:
            check_peer(transport.get_extra_info("ssl_object"), expected)
        except PeerIdentityError as exc:
            transport.abort()
            self.metrics.refuse("source", "peer-identity")
            log.warning("mTLS to %s:%d: %s", key[0], key[1], exc.reason)
            raise ConnectFailed(key, f"mTLS secure naming: {exc.reason}",
                                reason=Reason.PEER_AUTH.value) from None
        self.metrics.admit("source", "mutual_tls", str(material.svid.identity), str(expected))
        return transport, holder.hand_over(transport, factory())

    async def _handshake(self, key: EndpointKey, sock: socket.socket, ctx: ssl.SSLContext,
                         timeout: float) -> tuple[asyncio.Transport, _Held]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, holder = await loop.create_connection(
                    _Held, sock=sock, ssl=ctx, server_hostname="", ssl_handshake_timeout=timeout)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            sock.close()
            self.metrics.refuse("source", "handshake")
            detail = "timed out" if isinstance(exc, TimeoutError) else \
                str(exc) or type(exc).__name__
            raise ConnectFailed(key, f"mTLS handshake failed: {detail}",
                                reason=Reason.PEER_AUTH.value) from None
        self.handshakes += 1
        return transport, holder

    def exposition(self) -> bytes:
        """The identity/mTLS series (identity_metrics.py) for the worker's ``/metrics``."""
        return self.metrics.exposition()

    @property
    def opened(self) -> tuple[int, int]:
        """(HTTP/1.1, HTTP/2) mTLS connections opened by the pools so far."""
        return (sum(p.opened for p, _ in self._pools.values()),
                sum(h.opened for _, h in self._pools.values()))

    def idle_count(self) -> int:
        return sum(p.idle_count() for p, _ in self._pools.values())

    def sweep(self) -> None:
        for pool, h2pool in self._pools.values():
            pool.sweep()
            h2pool.sweep()

    def close(self) -> None:
        for pool, h2pool in self._pools.values():
            pool.close()
            h2pool.close()
        if self._hbone is not None:
            self._hbone.close()


class _Miss(enum.Enum):
    """Not remembered yet (None is a remembered answer: plaintext)."""

    MISS = 0


def _via_node(meta: EndpointMeta) -> str | None:
    """The node whose proxy answers for a ``node`` endpoint, or the waypoint's HBONE address
    (hbone_sidecar.py); None: the endpoint's own proxy."""
    return meta.node if meta.placement in _VIA else None


class _Held(asyncio.Protocol):
    """Holds a fresh TLS connection while its peer is checked: nothing is written to an
    unverified peer, and whatever the peer sends meanwhile (an HTTP/2 server's SETTINGS) is
    kept for the real protocol."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)

    def hand_over(self, transport: asyncio.Transport, proto: P) -> P:
        transport.set_protocol(proto)
        read_buffered(transport)  # no 256 KiB bytes per TLS read (_tlsread.py)
        proto.connection_made(transport)
        for chunk in self.data:
            proto.data_received(chunk)
        if self.eof and not proto.eof_received():
            transport.close()
        if self.lost is not None:
            proto.connection_lost(self.lost[0])
        return proto
