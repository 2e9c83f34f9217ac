"""The node-to-node tunnel protocol (HBONE-like), sans-IO: HTTP/2 CONNECT over mutual TLS.

Between node proxies each pod connection is one HTTP/2 stream on a TLS 1.3 connection to the
destination node's port 15008::

    :method CONNECT   :authority 10.244.2.7:8080        (the destination *pod* ip:port)
    hm-source-pod: shop/web-0                            (informational, for logs only)

The TLS client certificate is the *source workload's* SVID, so the destination decides by the
real caller's verified identity; one TLS connection per (source identity, destination node),
streams multiplexed. The destination answers ``200`` and the stream carries the bytes both
ways (END_STREAM = half-close), or refuses with a status and ``hm-proxy-error: <reason>``:

    400 bad-request       authority is not ip:port
    403 policy            AuthorizationPolicy denies the verified identity
    404 not-local         the address is not a node pod of this node
    429 stream-limit      the source identity has too many open streams here
    502 connect-failed    the destination pod refused or did not answer
    503 draining          the proxy is shutting down / handing over

This module holds the pure parts (authority parsing, request and answer heads); the stream
engine is :mod:`_tunnelio`, the h2 state machine ``proxy.protocols.http2``.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Final

from hybridmesh.proxy.protocols.http2 import H2Client, H2Limits, H2Server, ResponseHeaders

if TYPE_CHECKING:
    from hybridmesh.identity.spiffe import SpiffeId

__all__ = [
    "ERROR_HEADER",
    "REFUSALS",
    "SOURCE_HEADER",
    "TUNNEL_LIMITS",
    "TunnelRequestError",
    "answer",
    "open_stream",
    "parse_authority",
    "refusal_reason",
    "refuse",
    "sni_name",
]

ERROR_HEADER: Final = b"hm-proxy-error"
SOURCE_HEADER: Final = b"hm-source-pod"
REFUSALS: Final = {
    "bad-request": 400, "policy": 403, "not-local": 404, "stream-limit": 429,
    "connect-failed": 502, "draining": 503,
}  # fmt: skip
TUNNEL_LIMITS: Final = H2Limits(max_concurrent_streams=2048, stream_window=256 * 1024,
                                connection_window=8 * 1024 * 1024, max_resets=2000,
                                reset_ratio_after=100_000)
"""Tunnel streams are whole TCP connections: more of them per connection than HTTP requests,
and a client closing many connections at once resets many streams legitimately."""

Addr = tuple[str, int]


def sni_name(identity: SpiffeId) -> str:
    """The SNI a tunnel client sends to ask for ``identity``'s certificate (a node proxy
    serves every local pod's; a sidecar serves its own)."""
    return f"{identity.service_account}.{identity.namespace}.svid.hm"


class TunnelRequestError(Exception):
    """A CONNECT the server refuses before doing anything: reason is a REFUSALS key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_authority(authority: bytes) -> Addr:
    """``b"10.0.0.1:80"`` → ``("10.0.0.1", 80)``; IPv4 literal and port 1-65535 only."""
    try:
        text = authority.decode("ascii")
    except UnicodeDecodeError:
        raise TunnelRequestError("bad-request", "authority is not ASCII") from None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5:
        raise TunnelRequestError("bad-request", f"authority {text[:60]!r} is not ip:port")
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise TunnelRequestError("bad-request", f"{host[:60]!r} is not an IPv4 address") \
            from None
    number = int(port)
    if not 0 < number < 65536:
        raise TunnelRequestError("bad-request", f"port {number} out of range")
    return str(ip), number


def open_stream(conn: H2Client, destination: Addr, source_pod: str) -> int:
    """Send the CONNECT head for ``destination``; returns the stream id."""
    authority = f"{destination[0]}:{destination[1]}".encode("ascii")
    return conn.send_request(b"CONNECT", b"", authority, b"",
                             headers=[(SOURCE_HEADER, source_pod.encode("ascii"))])


def answer(conn: H2Server, stream_id: int) -> None:
    """Accept a CONNECT: 200, the stream now carries bytes."""
    conn.send_response(stream_id, 200)


def refuse(conn: H2Server, stream_id: int, reason: str) -> None:
    """Refuse a CONNECT with the reason's status and header, ending the stream."""
    status = REFUSALS.get(reason, 502)
    conn.send_response(stream_id, status, [(ERROR_HEADER, reason.encode("ascii"))],
                       end_stream=True)


def refusal_reason(head: ResponseHeaders) -> str | None:
    """None for an accepted CONNECT (2xx), else the server's reason (or ``status-<n>``)."""
    if 200 <= head.status < 300:
        return None
    for name, value in head.headers:
        if name == ERROR_HEADER:
            return value.decode("ascii", "replace")[:64]
    return f"status-{head.status}"
