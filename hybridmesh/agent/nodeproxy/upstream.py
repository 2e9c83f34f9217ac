"""Dialling a destination that is not a ``node`` pod: as the source pod, with what it can carry.

The node proxy relays a node pod's connection to a pod of another placement (docs/node.md §4).
Two rules, one per what the destination can verify:

- **a sidecar** (``sidecar``, ``sidecar+ebpf``): TLS 1.3 with the *source pod's* SVID, ALPN
  ``hm-tcp`` (what ``proxy/mtls_server.py`` terminates as an opaque relay from another
  sidecar), and the server's SPIFFE ID must be the endpoint's service account in its namespace
  (secure naming, as ``proxy/mtls.py`` checks). The sidecar's policy then judges the real
  caller, and STRICT accepts it. Nothing is written before the peer is verified.
- **anything else** (``kernel``, ``none``, an address outside the mesh): plain TCP *from the
  source pod's network namespace* — the socket is created there (``socket_factory``), so it
  leaves with the pod's own address and routes. A ``kernel`` destination's L4 policy then
  judges the source pod's numeric identity, not the node's: from the node netns the
  connection would carry the node's address, which the L4 datapath admits everywhere (node
  probes) — a bypass. No netns for the pod → refused, never the node's address.

Both return a connected transport whose protocol is the relay's upstream side.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Final

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.tls import PeerIdentityError, check_peer
from hybridmesh.proxy.identity import TlsMaterial

__all__ = [
    "MESHED_PLACEMENTS",
    "DialError",
    "SocketFactory",
    "dial_mesh",
    "dial_plain",
    "plain_socket",
]

MESHED_PLACEMENTS: Final = frozenset(("sidecar", "sidecar+ebpf"))
"""Destinations with a proxy of their own that verifies mTLS (``proxy.mtls`` says the same)."""

Addr = tuple[str, int]
SocketFactory = Callable[[str, str], socket.socket]
"""``(namespace, pod) -> a new TCP socket`` made in that pod's network namespace."""


class DialError(Exception):
    """The upstream could not be opened: ``reason`` is the refusal's metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def plain_socket(_namespace: str, _pod: str) -> socket.socket:
    """The factory for tests without pod namespaces: a socket where the proxy runs."""
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


async def _connect(sock: socket.socket, addr: Addr, factory: Callable[[], asyncio.Protocol], *,
                   mark: int | None, timeout: float, tls: ssl.SSLContext | None
                   ) -> asyncio.Transport:
    loop = asyncio.get_running_loop()
    try:
        sock.setblocking(False)
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, addr)
            if tls is None:
                transport, _ = await loop.create_connection(factory, sock=sock)
            else:
                transport, _ = await loop.create_connection(
                    factory, sock=sock, ssl=tls, server_hostname="",
                    ssl_handshake_timeout=timeout)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        sock.close()
        reason = "handshake-failed" if isinstance(exc, ssl.SSLError) else "connect-failed"
        raise DialError(reason, f"{addr[0]}:{addr[1]}: {exc or 'timed out'}") from None
    return transport


async def dial_plain(make_socket: SocketFactory, source: tuple[str, str], addr: Addr,
                     factory: Callable[[], asyncio.Protocol], *, mark: int | None,
                     timeout: float) -> asyncio.Transport:
    """Plain TCP to ``addr`` from the source pod ``(namespace, name)``'s network namespace."""
    try:
        sock = make_socket(*source)
    except OSError as exc:
        raise DialError("no-source-netns", f"{source[0]}/{source[1]}: {exc}") from None
    return await _connect(sock, addr, factory, mark=mark, timeout=timeout, tls=None)


async def dial_mesh(make_socket: SocketFactory, source: tuple[str, str], addr: Addr,
                    factory: Callable[[], asyncio.Protocol], *,
                    identity: tuple[TlsMaterial, SpiffeId], mark: int | None,
                    timeout: float) -> asyncio.Transport:
    """mTLS (ALPN ``hm-tcp``) with ``identity`` = (the source pod's material, the identity the
    sidecar must prove).

    The transport is aborted before any byte is written if the server's identity differs
    (``peer-identity``): a pod IP reused by another workload never receives the source's data.
    """
    try:
        sock = make_socket(*source)
    except OSError as exc:
        raise DialError("no-source-netns", f"{source[0]}/{source[1]}: {exc}") from None
    material, expected = identity
    transport = await _connect(sock, addr, factory, mark=mark, timeout=timeout,
                               tls=material.client_opaque)
    try:
        check_peer(transport.get_extra_info("ssl_object"), expected)
    except PeerIdentityError as exc:
        transport.abort()
        raise DialError("peer-identity", f"{addr[0]}:{addr[1]}: {exc.reason}") from None
    return transport
