"""Dialling a destination that is neither a ``node`` pod nor a sidecar: plain TCP as the pod.

The node proxy relays a node pod's connection to a pod of another placement (docs/node.md §4).
A **sidecar** pod (``sidecar``, ``sidecar+ebpf``) is reached by an HBONE stream with the source
pod's SVID (:mod:`sidecar`). **Anything else** (``kernel``, ``none``, an address outside the
mesh, a sidecar's own proxy ports): plain TCP *from the source pod's network namespace* — the
socket is created there (``socket_factory``), so it leaves with the pod's own address and
routes. A ``kernel`` destination's L4 policy then judges the source pod's numeric identity, not
the node's: from the node netns the connection would carry the node's address, which the L4
datapath admits everywhere (node probes) — a bypass. No netns for the pod → refused, never the
node's address.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Final

__all__ = [
    "MESHED_PLACEMENTS",
    "DialError",
    "SocketFactory",
    "dial_plain",
    "plain_socket",
]

MESHED_PLACEMENTS: Final = frozenset(("sidecar", "sidecar+ebpf"))
"""Destinations with a proxy of their own that accepts HBONE (``proxy.mtls`` says the same)."""

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
                   mark: int | None, timeout: float) -> asyncio.Transport:
    loop = asyncio.get_running_loop()
    try:
        sock.setblocking(False)
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, addr)
            transport, _ = await loop.create_connection(factory, sock=sock)
    except (OSError, TimeoutError) as exc:
        sock.close()
        raise DialError("connect-failed", f"{addr[0]}:{addr[1]}: {exc or 'timed out'}") \
            from None
    return transport


async def dial_plain(make_socket: SocketFactory, source: tuple[str, str], addr: Addr,
                     factory: Callable[[], asyncio.Protocol], *, mark: int | None,
                     timeout: float) -> asyncio.Transport:
    """Plain TCP to ``addr`` from the source pod ``(namespace, name)``'s network namespace."""
    try:
        sock = make_socket(*source)
    except OSError as exc:
        raise DialError("no-source-netns", f"{source[0]}/{source[1]}: {exc}") from None
    return await _connect(sock, addr, factory, mark=mark, timeout=timeout)
