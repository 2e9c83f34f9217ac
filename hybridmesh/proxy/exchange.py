"""One HTTP/1.1 request through the proxy: route, pick, connect, forward, retry, answer.

An :class:`Exchange` is created per request by the session. Its task runs the attempts:

1. ``route.plan(request)``: the matched route's timeouts, retry policy and endpoint picker;
2. per attempt: P2C picks an endpoint not tried yet, the pool gives a keep-alive connection,
   the head (re-serialized) and the body go out, and an :class:`_Attempt` receives the
   upstream's events;
3. a response whose status the route declared retryable is *held* (never forwarded) when the
   policy, the retry budget and the deadline all allow a retry; anything else streams to the
   client as it arrives, with backpressure both ways;
4. failures become the proxy's own answer (errors.py): 503 no endpoints, 502 refused/reset,
   504 timeout.

Replay: the request body is kept (up to 64 KiB) so a retry can resend it; a larger or
still-streaming body makes the request non-replayable, and then only a failed connect (nothing
was sent) is retried. A pooled connection that turns out closed before answering anything is
redone once on a fresh connection for idempotent requests, without counting as a retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from hybridmesh.proxy.errors import ProxyError, Reason, render
from hybridmesh.proxy.plan import Plan
from hybridmesh.proxy.protocols.http1 import (
    EndOfMessage,
    Framing,
    InformationalResponse,
    RemoteProtocolError,
    Request,
    Response,
    frame_data,
    frame_end,
    request_framing,
    response_framing,
    serialize_informational,
    serialize_request,
    serialize_response,
)
from hybridmesh.proxy.retry import IDEMPOTENT_METHODS
from hybridmesh.proxy.upstream import ConnectFailed, EndpointKey, H1Upstream
from hybridmesh.telemetry.proxy_metrics import Peer

if TYPE_CHECKING:
    from hybridmesh.proxy.h1session import Http1Session

__all__ = ["MAX_REPLAY_BODY", "Exchange"]

log = logging.getLogger(__name__)

MAX_REPLAY_BODY = 64 * 1024
_FORWARDED = "forwarded"
_RETRY = "retry"


class _Outcome:
    """How an attempt's response head went: forwarded, held for a retry, or failed."""

    __slots__ = ("attempt", "error", "kind", "stale", "status")

    def __init__(self, kind: str, status: int | None = None, error: ProxyError | None = None,
                 stale: bool = False, attempt: _Attempt | None = None) -> None:
        self.kind, self.status, self.error, self.stale = kind, status, error, stale
        self.attempt = attempt


class _Attempt:
    """The sink of one upstream connection for one try (see ``upstream.ResponseSink``)."""

    def __init__(self, ex: Exchange, conn: H1Upstream, key: EndpointKey, started: float) -> None:
        self.ex = ex
        self.conn = conn
        self.key = key
        self.lb_started = started
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[_Outcome] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.forwarding = False
        self.finished = False

    def on_informational(self, event: InformationalResponse) -> None:
        if self.ex.request.http_version == b"1.1" and not self.ex.response_started:
            self.ex.write_client(serialize_informational(event))

    def on_response(self, event: Response) -> None:
        ex = self.ex
        ex.upstream_result(self.key, event.status < 500, self.lb_started)
        if self.head.done():
            return
        if ex.claim_retry(event.status, None):
            self.head.set_result(_Outcome(_RETRY, status=event.status))
            return
        self.forwarding = True
        ex.start_response(event)
        self.head.set_result(_Outcome(_FORWARDED, status=event.status, attempt=self))

    def on_body(self, data: bytes) -> None:
        if self.forwarding:
            self.ex.response_body(data)

    def on_end(self, event: EndOfMessage) -> None:
        self.finished = True
        ex = self.ex
        if ex.request_sent:
            ex.ctx.pool.release(self.conn)
        else:  # answered before the whole request went out: the stream is not reusable
            self.conn.detach()
            self.conn.abort()
        if self.forwarding:
            ex.response_end(event)
            if not self.done.done():
                self.done.set_result(None)

    def on_upstream_error(self, error: RemoteProtocolError | None, detail: str) -> None:
        self.conn.detach()
        self.conn.abort()
        if not self.head.done():
            self.ex.upstream_result(self.key, False, self.lb_started)
            reason = Reason.BAD_RESPONSE if error is not None else Reason.UPSTREAM_RESET
            stale = error is None and self.conn.uses > 1 and not self.conn.received
            err = ProxyError(reason, self.ex.where(self.key), detail)
            self.head.set_result(_Outcome("error", error=err, stale=stale))
        elif self.forwarding and not self.done.done():
            self.done.set_exception(ProxyError(Reason.UPSTREAM_RESET, self.ex.where(self.key),
                                               f"mid-response: {detail}"))

    def on_batch_end(self) -> None:
        self.ex.flush_client()

    def on_upstream_writable(self, writable: bool) -> None:
        from hybridmesh.proxy.h1session import PAUSE_UPSTREAM

        self.ex.session.pause_reading(PAUSE_UPSTREAM, not writable)


class Exchange:
    """One request: its body, its attempts, its response, its telemetry."""

    def __init__(self, session: Http1Session, request: Request) -> None:
        self.session = session
        self.ctx = session.ctx
        if request.http_version == b"1.0" and not any(n == b"host" for n, _ in request.headers):
            # HTTP/1.0 may omit Host; we always speak HTTP/1.1 upstream, which requires it
            authority = session.route.authority.encode("latin-1")
            request = replace(request, headers=(*request.headers, (b"host", authority)))
        self.request = request
        self.method = request.method.decode("latin-1")
        self.started = time.monotonic()
        self.request_complete = False
        self.request_sent = False  # head + whole body written to the current upstream
        self.response_started = False
        self._framing = request_framing(request)
        self._pending: list[bytes] = []  # body not yet written to an upstream
        self._kept: list[bytes] | None = []  # whole body for replays (None: too big)
        self._kept_size = 0
        self._sent_body = False
        self._trailers: EndOfMessage | None = None
        self._attempt: _Attempt | None = None
        self._plan: Plan | None = None
        self._key: EndpointKey | None = None
        self._task: asyncio.Task[None] | None = None
        self._resp_framing = Framing.NONE
        self._keep_alive = False
        self._deadline: float | None = None
        self.retries = 0
        self.status = 0
        self.flags = "-"
        self._finished = False
        self._wbuf: list[bytes] = []

    def start(self) -> None:
        self._task = self.ctx.tasks.spawn(self._run())

    # -- request body (from the session) ----------------------------------------------------
    def request_body(self, data: bytes) -> None:
        kept = self._kept
        if kept is not None:
            self._kept_size += len(data)
            if self._kept_size > MAX_REPLAY_BODY:
                self._kept = None
            else:
                kept.append(data)
        att = self._attempt
        if att is not None and not att.conn.closed:
            self._sent_body = True
            att.conn.write(frame_data(self._framing, data))
        else:
            self._pending.append(data)
            if sum(map(len, self._pending)) > MAX_REPLAY_BODY:
                from hybridmesh.proxy.h1session import PAUSE_PREATTACH

                self.session.pause_reading(PAUSE_PREATTACH, True)

    def request_end(self, event: EndOfMessage) -> None:
        self.request_complete = True
        self._trailers = event
        att = self._attempt
        if att is not None and not att.conn.closed:
            att.conn.write(frame_end(self._framing, event.trailers))
            self.request_sent = True

    def request_broken(self, detail: str) -> None:
        """The client's body violated HTTP/1.1 mid-request: drop everything."""
        self.flags = "DPE"
        self._abort_attempt()
        if self._task is not None:
            self._task.cancel()

    def client_gone(self) -> None:
        if not self._finished:
            self.flags = "DC"
            self._abort_attempt()
            if self._task is not None:
                self._task.cancel()

    def client_writable(self, writable: bool) -> None:
        att = self._attempt
        if att is not None:
            att.conn.pause_reading(not writable)

    # -- the attempts -----------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._forward()
        except ProxyError as err:
            self._fail(err)
        except asyncio.CancelledError:
            self._finish(self.status)
        except Exception:  # a bug of ours: the client still gets an answer, we get a trace
            log.exception("exchange %s %r failed", self.method, self.request.target)
            self._fail(ProxyError(Reason.INTERNAL, self.where(self._key), "internal error"))

    async def _forward(self) -> None:
        plan = self._plan = self.session.route.plan(self.request)
        if plan.budget is not None:
            plan.budget.deposit()
        if plan.request_timeout_s is not None:
            self._deadline = time.monotonic() + plan.request_timeout_s
        tried: list[EndpointKey] = []
        while True:
            key = plan.pick(tried)
            if key is None:
                raise ProxyError(Reason.NO_ENDPOINTS, plan.destination,
                                 "no ready (non-ejected) endpoint")
            self._key = key
            tried.append(key)
            outcome = await self._try(plan, key)
            if outcome.kind == _FORWARDED:
                await self._until_done(outcome.attempt)
                return
            if outcome.kind == _RETRY:
                await asyncio.sleep(plan.retry.backoff(self.retries - 1, self.ctx.rng))
                continue
            err = outcome.error
            assert err is not None
            if not self.claim_retry(None, err.reason.value):
                raise err
            await asyncio.sleep(plan.retry.backoff(self.retries - 1, self.ctx.rng))

    async def _try(self, plan: Plan, key: EndpointKey) -> _Outcome:
        bal = plan.balancer
        started = bal.lb.start(key) if bal is not None else 0.0
        for fresh in (False, True):
            try:
                conn = await self.ctx.pool.acquire(key, fresh=fresh)
            except ConnectFailed as exc:
                self.upstream_result(key, False, started)
                reason = Reason.CONNECT_TIMEOUT if exc.timeout else Reason.CONNECT_REFUSED
                return _Outcome("error", error=ProxyError(reason, self.where(key), exc.detail))
            outcome = await self._send(key, conn, started)
            if outcome.stale and self._replayable(idempotent_only=True):
                continue  # a pooled connection the server had closed: redo on a fresh one
            return outcome
        raise AssertionError("unreachable")

    async def _send(self, key: EndpointKey, conn: H1Upstream, started: float) -> _Outcome:
        plan = self._plan
        assert plan is not None
        att = self._attempt = _Attempt(self, conn, key, started)
        conn.attach(att, self.request.method)
        body = self._body_to_send()
        conn.write(b"".join([serialize_request(self.request), *body]))
        if self.request_complete and self._trailers is not None:
            conn.write(frame_end(self._framing, self._trailers.trailers))
            self.request_sent = True
        from hybridmesh.proxy.h1session import PAUSE_PREATTACH

        self.session.pause_reading(PAUSE_PREATTACH, False)
        if self.session.write_paused:
            conn.pause_reading(True)
        timeout = self._attempt_timeout(plan)
        try:
            if timeout is None:
                return await att.head
            async with asyncio.timeout(timeout):
                return await att.head
        except TimeoutError:
            conn.detach()
            conn.abort()
            self.upstream_result(key, False, started)
            return _Outcome("error", error=ProxyError(Reason.TIMEOUT, self.where(key),
                                                      f"no response head within {timeout:.3f}s"))

    def _body_to_send(self) -> list[bytes]:
        framing = self._framing
        if not self._sent_body:
            chunks, self._pending = self._pending, []
        else:
            chunks = list(self._kept or ())
        self._sent_body = self._sent_body or bool(chunks)
        return [frame_data(framing, c) for c in chunks]

    async def _until_done(self, att: _Attempt | None) -> None:
        assert att is not None
        if att.done.done():
            att.done.result()  # raises the mid-response failure, if any
            return
        remaining = None if self._deadline is None else self._deadline - time.monotonic()
        try:
            if remaining is None:
                await att.done
            else:
                async with asyncio.timeout(max(remaining, 0.0)):
                    await att.done
        except TimeoutError:
            self.flags = "UT"
            self._abort_attempt()
            self.session.abort()
            self._finish(self.status)

    def _attempt_timeout(self, plan: Plan) -> float | None:
        per_try = plan.backend_timeout_s
        if self._deadline is None:
            return per_try
        left = max(self._deadline - time.monotonic(), 0.0)
        return left if per_try is None else min(per_try, left)

    # -- retry decisions ---------------------------------------------------------------------
    def _replayable(self, *, idempotent_only: bool = False) -> bool:
        """Whether the request can be sent again as it was."""
        if idempotent_only and self.method not in IDEMPOTENT_METHODS:
            return False
        if not self._sent_body:
            return True  # the body (if any) is still all pending: nothing was consumed
        return self.request_complete and self._kept is not None

    def claim_retry(self, status: int | None, error: str | None) -> bool:
        """Decide (and pay for) a retry: policy, replayability, budget and deadline agree."""
        plan = self._plan
        if plan is None or self.response_started or self.session.lost:
            return False
        if status is not None and status not in plan.retry.codes:
            return False  # the common case, decided without the full policy
        if not plan.retry.should_retry(self.retries, status=status, error=error,
                                       method=self.method, replayable=self._replayable()):
            return False
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return False
        if plan.budget is not None and not plan.budget.withdraw():
            self.ctx.metrics.retry(plan.service, exhausted=True)
            return False
        self.retries += 1
        self.ctx.metrics.retry(plan.service, exhausted=False)
        return True

    def upstream_result(self, key: EndpointKey, ok: bool, started: float) -> None:
        """Feed the balancer (RTT/failure) and outlier detection with one try's outcome."""
        plan = self._plan
        bal = plan.balancer if plan is not None else None
        if bal is None or plan is None:
            return
        bal.lb.finish(key, started, ok)
        if bal.record(key, ok):
            self.ctx.metrics.ejection(plan.service)

    # -- the response --------------------------------------------------------------------------
    def start_response(self, resp: Response) -> None:
        req = self.request
        self.response_started = True
        self.status = resp.status
        self._resp_framing = response_framing(resp, req.method, req.http_version)
        self._keep_alive = (
            req.keep_alive
            and self.request_complete
            and not self.ctx.draining
            and self._resp_framing is not Framing.CLOSE
        )
        self.write_client(serialize_response(resp, request_method=req.method,
                                             http_version=req.http_version,
                                             keep_alive=self._keep_alive))

    def response_body(self, data: bytes) -> None:
        self.write_client(frame_data(self._resp_framing, data))

    def response_end(self, event: EndOfMessage) -> None:
        self.write_client(frame_end(self._resp_framing, event.trailers))
        self.flush_client()
        self._attempt = None
        self._finish(self.status)

    def write_client(self, data: bytes) -> None:
        """Queue bytes for the client; :meth:`flush_client` writes them in one go (a response
        head and the body that came in the same read cost one send, not two)."""
        if data:
            self._wbuf.append(data)

    def flush_client(self) -> None:
        buf = self._wbuf
        if buf:
            data = buf[0] if len(buf) == 1 else b"".join(buf)
            buf.clear()
            if not self.session.lost:
                self.session.transport.write(data)

    def where(self, key: EndpointKey | None) -> str:
        dest = self._plan.destination if self._plan is not None else self.session.route.destination
        return dest if key is None else f"{dest} via {key[0]}:{key[1]}"

    # -- the end -----------------------------------------------------------------------------
    def _fail(self, err: ProxyError) -> None:
        """The proxy answers for the upstream (or cuts a response it cannot complete)."""
        self._abort_attempt()
        self.ctx.metrics.proxy_error(err.reason.value)
        self.flags = err.reason.flag
        if self.response_started:
            self.session.abort()
            self._finish(self.status)
            return
        self._keep_alive = (self.request.keep_alive and self.request_complete
                            and not self.ctx.draining and err.code != 400)
        self.write_client(render(err, self.ctx.proxy_name, keep_alive=self._keep_alive))
        self.flush_client()
        self._finish(err.code)

    def _abort_attempt(self) -> None:
        att, self._attempt = self._attempt, None
        if att is not None and not att.finished:
            att.conn.detach()
            att.conn.abort()

    def _finish(self, status: int) -> None:
        if self._finished:
            return
        self._finished = True
        self.status = status
        self.ctx.requests += 1
        plan, key, route = self._plan, self._key, self.session.route
        destination = plan.peer(key) if plan is not None and key is not None else Peer.unknown()
        service = plan.service if plan is not None else route.service
        latency = time.monotonic() - self.started
        self.ctx.metrics.request(
            reporter=route.reporter, source=route.source, destination=destination,
            service=service, protocol="http", status=status, grpc_status="",
            flags=self.flags, latency_s=latency,
        )  # fmt: skip
        if self.ctx.access_log.enabled:
            self._log(service, destination, latency)
        if not self.session.lost:
            self.session.exchange_done(self._keep_alive)

    def _log(self, service: str, destination: Peer, latency: float) -> None:
        req, route = self.request, self.session.route
        headers = dict(req.headers)
        self.ctx.access_log.log({
            "start_time": time.time() - latency, "method": self.method,
            "path": req.target.decode("latin-1"), "protocol": "HTTP/" + req.http_version.decode(),
            "response_code": self.status, "response_flags": self.flags,
            "duration_ms": round(latency * 1000.0, 3),
            "upstream_host": f"{self._key[0]}:{self._key[1]}" if self._key else None,
            "downstream_remote_address": self.session.remote,
            "source_workload": route.source.workload, "source_namespace": route.source.namespace,
            "destination_workload": destination.workload,
            "destination_namespace": destination.namespace, "destination_service": service,
            "route_name": self._plan.route if self._plan is not None else None,
            "authority": headers.get(b"host", b"").decode("latin-1"),
            "user_agent": headers.get(b"user-agent", b"").decode("latin-1"),
            "retry_count": self.retries, "reporter": route.reporter,
        })  # fmt: skip
