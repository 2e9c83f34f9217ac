"""Linux socket options the proxy needs that the socket module does not name.

``SO_ORIGINAL_DST`` (netfilter, ``linux/netfilter_ipv4.h``) returns the destination a connection
had before an iptables REDIRECT/DNAT rewrote it: a ``struct sockaddr_in`` (16 bytes, port and
address in network byte order). ``SO_MARK`` tags the proxy's own upstream sockets so capture
lets them through (needs CAP_NET_ADMIN; an unprivileged proxy relies on its uid instead).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Protocol

__all__ = [
    "SO_ORIGINAL_DST",
    "SockoptSocket",
    "decode_sockaddr_in",
    "original_dst",
    "set_mark",
    "tune_stream",
]

SO_ORIGINAL_DST = 80


class SockoptSocket(Protocol):
    """What we use of a socket (``socket.socket`` and uvloop's PseudoSocket both fit)."""

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...
    def setsockopt(self, level: int, optname: int, value: int, /) -> None: ...


def decode_sockaddr_in(raw: bytes) -> tuple[str, int]:
    """``struct sockaddr_in`` bytes → (dotted IPv4, port)."""
    if len(raw) < 8:
        raise ValueError(f"sockaddr_in needs 8+ bytes, got {len(raw)}")
    family = int.from_bytes(raw[:2], "little")
    if family != socket.AF_INET:
        raise ValueError(f"not an AF_INET sockaddr (family {family})")
    port = int.from_bytes(raw[2:4], "big")
    return socket.inet_ntoa(raw[4:8]), port


def original_dst(sock: SockoptSocket) -> tuple[str, int] | None:
    """The pre-REDIRECT destination of an accepted IPv4 socket; None if it was not redirected
    (the kernel answers ENOENT when conntrack has no NAT for the connection)."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    return decode_sockaddr_in(raw)


def set_mark(sock: SockoptSocket, mark: int) -> None:
    """SO_MARK ``mark`` on ``sock`` (raises PermissionError without CAP_NET_ADMIN)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)


def tune_stream(sock: SockoptSocket) -> None:
    """TCP_NODELAY: the proxy writes whole messages; Nagle would only add latency."""
    with contextlib.suppress(OSError):  # an already-reset connection: nothing to tune
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
