"""The two seams of a request's path, so one :class:`~hybridmesh.proxy.exchange.Exchange`
serves HTTP/1.1 and HTTP/2 on either side.

- :class:`Downstream`: where the response goes (an HTTP/1.1 client connection, or one stream
  of an HTTP/2 client connection). It owns the wire format towards the client.
- :class:`UpstreamStream`: where the request goes (a pooled HTTP/1.1 connection, or one stream
  of a pooled HTTP/2 connection). It owns the wire format towards the upstream and reports
  the upstream's answer to a :class:`ResponseSink` as HTTP/1-shaped events.

Reading from the client pauses for independent reasons, one bit each, so one cannot undo
another: the upstream cannot take more request body (``PAUSE_UPSTREAM``), the body is
buffering before any upstream is connected (``PAUSE_PREATTACH``), pipelined bytes pile up
behind an in-flight request (``PAUSE_PIPELINE``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from hybridmesh.proxy.protocols.http1 import (
    EndOfMessage,
    Headers,
    InformationalResponse,
    RemoteProtocolError,
    Request,
    Response,
)

if TYPE_CHECKING:
    from hybridmesh.proxy.context import ProxyContext
    from hybridmesh.proxy.errors import ProxyError
    from hybridmesh.proxy.plan import ConnRoute

__all__ = [
    "PAUSE_PIPELINE",
    "PAUSE_PREATTACH",
    "PAUSE_UPSTREAM",
    "Downstream",
    "ResponseSink",
    "UpstreamStream",
]

PAUSE_UPSTREAM = 1
PAUSE_PREATTACH = 2
PAUSE_PIPELINE = 4


class ResponseSink(Protocol):
    """Who receives an upstream's answer: the request's current attempt."""

    def on_informational(self, event: InformationalResponse) -> None: ...
    def on_response(self, event: Response) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_end(self, event: EndOfMessage) -> None: ...
    def on_message(self, head: Response, body: bytes, end: EndOfMessage) -> None:
        """A whole response from one read: on_response, on_body (if any), on_end and
        on_batch_end in one call."""
        ...
    def on_upstream_error(self, error: RemoteProtocolError | None, detail: str, *,
                          refused: bool = False) -> None: ...
    def on_upstream_writable(self, writable: bool) -> None: ...
    def on_batch_end(self) -> None: ...


class UpstreamStream(Protocol):
    """One request's use of an upstream connection (HTTP/1.1) or stream (HTTP/2)."""

    @property
    def closed(self) -> bool: ...
    @property
    def uses(self) -> int:
        """Requests sent on the underlying connection (stale-connection detection)."""
        ...
    @property
    def received(self) -> bool:
        """Any byte of the answer arrived."""
        ...

    def attach(self, sink: ResponseSink, method: bytes) -> None: ...
    def send_request(self, request: Request, body: list[bytes], end: EndOfMessage | None
                     ) -> None: ...
    def send_body(self, data: bytes) -> None: ...
    def send_end(self, trailers: Headers) -> None: ...
    def pause_reading(self, paused: bool) -> None: ...
    def detach(self) -> None: ...
    def abort(self) -> None: ...
    def release(self) -> None: ...


class Downstream(Protocol):
    """Where one request's answer goes; also the request's flow-control handle."""

    @property
    def ctx(self) -> ProxyContext: ...
    @property
    def route(self) -> ConnRoute: ...
    @property
    def remote(self) -> str: ...
    @property
    def lost(self) -> bool: ...
    @property
    def write_paused(self) -> bool: ...
    @property
    def protocol(self) -> str:
        """What the client speaks: ``http1`` or ``http2``."""
        ...

    def send_informational(self, event: InformationalResponse) -> None: ...
    def send_head(self, request: Request, response: Response, keep_alive: bool) -> bool:
        """Queue the response head; returns whether the connection stays open after it."""
        ...
    def send_body(self, data: bytes) -> None: ...
    def send_end(self, trailers: Headers) -> None: ...
    def send_error(self, err: ProxyError, keep_alive: bool) -> None: ...
    def flush(self) -> None: ...
    def pause_reading(self, reason: int, paused: bool) -> None: ...
    def exchange_done(self, keep_alive: bool) -> None: ...
    def abort(self) -> None: ...
