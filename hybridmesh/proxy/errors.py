"""The proxy's own error responses: never an opaque 503.

When the proxy, not the application, decides the answer (no endpoint, connection refused,
timeout, a request it refuses to parse), the client gets a status, an ``hm-proxy-error``
header naming the reason, and a plain-text body naming the proxy (its pod), the reason and the
destination. A human reading ``curl -i`` output, and a test, can tell a proxy verdict from an
application answer at a glance.

Each reason also has an Envoy-style response flag (``UH`` no healthy upstream, ``UF`` upstream
connection failure, ``UT`` upstream timeout, ...) for the ``response_flags`` metric label and
the access log.
"""

from __future__ import annotations

import enum

__all__ = ["HEADER", "ProxyError", "Reason", "render", "render_body"]

HEADER = b"hm-proxy-error"


class Reason(enum.Enum):
    """Why the proxy answered itself; ``value`` is the stable name (header, metrics, logs)."""

    NO_ENDPOINTS = "no-endpoints"
    NO_WAYPOINT = "no-waypoint"
    NO_BACKEND = "no-backend"
    CONNECT_REFUSED = "connect-refused"
    CONNECT_TIMEOUT = "connect-timeout"
    UPSTREAM_RESET = "upstream-reset"
    REFUSED_STREAM = "refused-stream"
    TIMEOUT = "timeout"
    BAD_RESPONSE = "bad-response"
    BAD_REQUEST = "bad-request"
    POLICY = "policy"
    INTERNAL = "internal"
    NO_IDENTITY = "no-identity"
    PEER_AUTH = "connect-peer-auth"

    @property
    def status(self) -> int:
        return _STATUS[self]

    @property
    def flag(self) -> str:
        return _FLAG[self]

    @property
    def text(self) -> str:
        return _TEXT[self]


_STATUS = {
    Reason.NO_ENDPOINTS: 503,
    Reason.NO_WAYPOINT: 503,
    Reason.NO_BACKEND: 500,
    Reason.CONNECT_REFUSED: 502,
    Reason.CONNECT_TIMEOUT: 504,
    Reason.UPSTREAM_RESET: 502,
    Reason.REFUSED_STREAM: 503,
    Reason.TIMEOUT: 504,
    Reason.BAD_RESPONSE: 502,
    Reason.BAD_REQUEST: 400,
    Reason.POLICY: 403,
    Reason.INTERNAL: 500,
    Reason.NO_IDENTITY: 503,
    Reason.PEER_AUTH: 502,
}
_FLAG = {
    Reason.NO_ENDPOINTS: "UH",
    Reason.NO_WAYPOINT: "UH",
    Reason.NO_BACKEND: "NR",
    Reason.CONNECT_REFUSED: "UF",
    Reason.CONNECT_TIMEOUT: "UF",
    Reason.UPSTREAM_RESET: "UC",
    Reason.REFUSED_STREAM: "UR",
    Reason.TIMEOUT: "UT",
    Reason.BAD_RESPONSE: "UPE",
    Reason.BAD_REQUEST: "DPE",
    Reason.POLICY: "RBAC",
    Reason.INTERNAL: "IE",
    Reason.NO_IDENTITY: "NI",
    Reason.PEER_AUTH: "UF",
}
_TEXT = {
    Reason.NO_ENDPOINTS: "no ready endpoint for the destination",
    Reason.NO_WAYPOINT: "the Service needs L7 and its waypoint is not ready "
                        "(never bypassed: its policies live there)",
    Reason.NO_BACKEND: "the matched route has no usable backend (every weight is 0)",
    Reason.CONNECT_REFUSED: "the upstream refused or dropped the connection",
    Reason.CONNECT_TIMEOUT: "the upstream did not accept the connection in time",
    Reason.UPSTREAM_RESET: "the upstream closed the connection before a complete response",
    Reason.REFUSED_STREAM: "the upstream refused the HTTP/2 stream (nothing was processed)",
    Reason.TIMEOUT: "no response from the upstream within the request timeout",
    Reason.BAD_RESPONSE: "the upstream sent an invalid HTTP response",
    Reason.BAD_REQUEST: "the request is not valid HTTP/1.1",
    Reason.POLICY: "denied by an authorization policy",
    Reason.INTERNAL: "the proxy failed (a bug: its log has the details)",
    Reason.NO_IDENTITY: "this proxy has no valid certificate (the CA is unreachable): "
                        "it will not talk to meshed peers without mTLS",
    Reason.PEER_AUTH: "the mTLS handshake with the peer proxy failed, or its identity may "
                      "not serve the destination (secure naming)",
}
_PHRASES = {400: b"Bad Request", 403: b"Forbidden", 414: b"URI Too Long",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
            501: b"Not Implemented", 502: b"Bad Gateway",
            503: b"Service Unavailable", 504: b"Gateway Timeout",
            505: b"HTTP Version Not Supported"}


class ProxyError(Exception):
    """A proxy verdict: the reason, where the request was going, and a detail for humans.

    ``status`` overrides the reason's default (a request error carries 414/431/505).
    """

    def __init__(
        self, reason: Reason, destination: str, detail: str = "", *, status: int | None = None
    ) -> None:
        super().__init__(reason, destination, detail)
        self.reason = reason
        self.destination = destination
        self.detail = detail
        self.status = status

    @property
    def code(self) -> int:
        return self.status if self.status is not None else self.reason.status

    def __str__(self) -> str:
        extra = f": {self.detail}" if self.detail else ""
        return f"{self.reason.value} ({self.destination}){extra}"


def _clean(text: str) -> str:
    """One printable line: the body must never break the response (or a terminal)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:500]


def render_body(error: ProxyError, proxy: str) -> bytes:
    """The plain-text body naming the proxy, the reason and the destination."""
    return (
        f"hm-proxy {_clean(proxy)}: {error.reason.text}\n"
        f"reason: {error.reason.value}\n"
        f"destination: {_clean(error.destination)}\n"
        + (f"detail: {_clean(error.detail)}\n" if error.detail else "")
    ).encode("ascii")


def render(error: ProxyError, proxy: str, *, keep_alive: bool = False) -> bytes:
    """The complete HTTP/1.1 response for ``error`` from the proxy of pod ``proxy``."""
    status = error.code
    body = render_body(error, proxy)
    head = [
        b"HTTP/1.1 %d %s\r\n" % (status, _PHRASES.get(status, b"Error")),
        HEADER + b": " + error.reason.value.encode("ascii") + b"\r\n",
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body),
    ]
    if not keep_alive:
        head.append(b"connection: close\r\n")
    return b"".join(head) + b"\r\n" + body
