"""One try of a request on one upstream stream: the sink of the upstream's events.

The :class:`Attempt` decides, when the response head arrives, whether it is *held* for a retry
(the exchange's policy, budget and deadline agree) or forwarded; forwarded heads, bodies and
trailers go to the downstream as they arrive. It reports to its exchange by plain calls:
``start_response`` (the head goes to the client), ``head_failed`` with an :class:`Outcome`
(held for a retry, or failed before any byte of the response went to the client),
``response_end``/``response_message`` and ``response_failed`` — no futures and no task to
wake, so a response that arrives in one read is forwarded within that read's callback.
"""

from __future__ import annotations

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

    __slots__ = ("conn", "done", "ex", "finished", "forwarding", "head_done", "key",
                 "lb_started")

    def __init__(self, ex: Exchange, conn: UpstreamStream, key: EndpointKey,
                 started: float) -> None:
        self.ex = ex
        self.conn = conn
        self.key = key
        self.lb_started = started
        self.head_done = False  # the head's fate is decided (forwarded, held, failed, timed out)
        self.forwarding = False
        self.finished = False  # the upstream's response is complete
        self.done = False  # the forwarded response ended, or broke mid-way

    def on_informational(self, event: InformationalResponse) -> None:
        ex = self.ex
        if not ex.response_started and (ex.down.protocol != "http1"
                                         or ex.request.http_version == b"1.1"):
            ex.down.send_informational(event)

    def on_response(self, event: Response) -> None:
        ex = self.ex
        ex.upstream_result(self.key, event.status < 500, self.lb_started)
        if self.head_done:
            return
        self.head_done = True
        if ex.claim_retry(event.status, None):
            ex.head_failed(Outcome(RETRY, status=event.status))
            return
        self.forwarding = True
        ex.start_response(event, self)

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
        if self.forwarding and not self.done:
            self.done = True
            ex.response_end(event)

    def on_message(self, head: Response, body: bytes, end: EndOfMessage) -> None:
        """A whole response in one read (the common case): what on_response, on_body and
        on_end do, in one call with one write downstream (the head decision of
        :meth:`on_response`, inlined: this runs per request)."""
        ex = self.ex
        status = head.status
        ex.upstream_result(self.key, status < 500, self.lb_started)
        forward = False
        if not self.head_done:
            self.head_done = True
            if ex.claim_retry(status, None):
                ex.head_failed(Outcome(RETRY, status=status))
            else:
                self.forwarding = forward = True
        self.finished = True
        conn = self.conn
        if ex.request_sent:
            conn.release()
        else:  # answered before the whole request went out: the stream is not reusable
            conn.detach()
            conn.abort()
        if forward:
            self.done = True
            ex.forward_message(head, body, end)
        elif self.forwarding and not self.done:
            self.done = True
            ex.response_message(body, end)
        else:
            ex.down.flush()

    def on_upstream_error(self, error: RemoteProtocolError | None, detail: str, *,
                          refused: bool = False) -> None:
        self.conn.detach()
        self.conn.abort()
        ex = self.ex
        if not self.head_done:
            self.head_done = True
            ex.upstream_result(self.key, False, self.lb_started)
            if refused:  # HTTP/2 REFUSED_STREAM: the upstream did not process it
                reason = Reason.REFUSED_STREAM
            else:
                reason = Reason.BAD_RESPONSE if error is not None else Reason.UPSTREAM_RESET
            stale = error is None and self.conn.uses > 1 and not self.conn.received
            err = ProxyError(reason, ex.where(self.key), detail)
            ex.head_failed(Outcome(ERROR, error=err, stale=stale))
        elif self.forwarding and not self.done:
            self.done = True
            ex.response_failed(ProxyError(Reason.UPSTREAM_RESET, ex.where(self.key),
                                          f"mid-response: {detail}"))

    def on_batch_end(self) -> None:
        self.ex.down.flush()

    def on_upstream_writable(self, writable: bool) -> None:
        self.ex.down.pause_reading(PAUSE_UPSTREAM, not writable)
