"""One try of a request on one upstream stream: the sink of the upstream's events.

The :class:`Attempt` decides, when the response head arrives, whether it is *held* for a retry
(the exchange's policy, budget and deadline agree) or forwarded; forwarded heads, bodies and
trailers go to the downstream as they arrive. Its two futures tell the exchange's task how the
head went (:class:`Outcome`) and when the response is complete.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from hybridmesh.proxy.errors import ProxyError, Reason
from hybridmesh.proxy.protocols.http1 import (
    EndOfMessage,
    InformationalResponse,
    RemoteProtocolError,
    Response,
)
from hybridmesh.proxy.streams import PAUSE_UPSTREAM, UpstreamStream
from hybridmesh.proxy.upstream import EndpointKey

if TYPE_CHECKING:
    from hybridmesh.proxy.exchange import Exchange

__all__ = ["ERROR", "FORWARDED", "RETRY", "Attempt", "Outcome"]

FORWARDED = "forwarded"
RETRY = "retry"
ERROR = "error"


class Outcome:
    """How an attempt's response head went: forwarded, held for a retry, or failed."""

    __slots__ = ("attempt", "error", "kind", "stale", "status")

    def __init__(self, kind: str, status: int | None = None, error: ProxyError | None = None,
                 stale: bool = False, attempt: Attempt | None = None) -> None:
        self.kind, self.status, self.error, self.stale = kind, status, error, stale
        self.attempt = attempt


class Attempt:
    """The :class:`~hybridmesh.proxy.streams.ResponseSink` of one try."""

    def __init__(self, ex: Exchange, conn: UpstreamStream, key: EndpointKey,
                 started: float) -> None:
        self.ex = ex
        self.conn = conn
        self.key = key
        self.lb_started = started
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[Outcome] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.forwarding = False
        self.finished = False

    def on_informational(self, event: InformationalResponse) -> None:
        ex = self.ex
        if not ex.response_started and (ex.down.protocol != "http1"
                                         or ex.request.http_version == b"1.1"):
            ex.down.send_informational(event)

    def on_response(self, event: Response) -> None:
        ex = self.ex
        ex.upstream_result(self.key, event.status < 500, self.lb_started)
        if self.head.done():
            return
        if ex.claim_retry(event.status, None):
            self.head.set_result(Outcome(RETRY, status=event.status))
            return
        self.forwarding = True
        ex.start_response(event)
        self.head.set_result(Outcome(FORWARDED, status=event.status, attempt=self))

    def on_body(self, data: bytes) -> None:
        if self.forwarding:
            self.ex.down.send_body(data)

    def on_end(self, event: EndOfMessage) -> None:
        self.finished = True
        ex = self.ex
        if ex.request_sent:
            self.conn.release()
        else:  # answered before the whole request went out: the stream is not reusable
            self.conn.detach()
            self.conn.abort()
        if self.forwarding:
            ex.response_end(event)
            if not self.done.done():
                self.done.set_result(None)

    def on_upstream_error(self, error: RemoteProtocolError | None, detail: str, *,
                          refused: bool = False) -> None:
        self.conn.detach()
        self.conn.abort()
        if not self.head.done():
            self.ex.upstream_result(self.key, False, self.lb_started)
            if refused:  # HTTP/2 REFUSED_STREAM: the upstream did not process it
                reason = Reason.REFUSED_STREAM
            else:
                reason = Reason.BAD_RESPONSE if error is not None else Reason.UPSTREAM_RESET
            stale = error is None and self.conn.uses > 1 and not self.conn.received
            err = ProxyError(reason, self.ex.where(self.key), detail)
            self.head.set_result(Outcome(ERROR, error=err, stale=stale))
        elif self.forwarding and not self.done.done():
            self.done.set_exception(ProxyError(Reason.UPSTREAM_RESET, self.ex.where(self.key),
                                               f"mid-response: {detail}"))

    def on_batch_end(self) -> None:
        self.ex.down.flush()

    def on_upstream_writable(self, writable: bool) -> None:
        self.ex.down.pause_reading(PAUSE_UPSTREAM, not writable)
