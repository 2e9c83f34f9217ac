"""One request through the proxy: route, pick, connect, forward, retry, answer.

An :class:`Exchange` is created per request by a downstream session (HTTP/1.1 connection or
HTTP/2 stream, see streams.py), which calls :meth:`Exchange.start` once it has read what the
client sent so far. The steps:

1. ``route.plan(request)``: the matched route's timeouts, retry policy and endpoint picker;
2. per attempt: P2C picks an endpoint not tried yet, a pool gives an upstream stream (a
   keep-alive HTTP/1.1 connection or a stream on a multiplexed HTTP/2 connection), the head
   and the body go out, and an :class:`~hybridmesh.proxy.attempt.Attempt` receives the
   upstream's events;
3. a response whose status the route declared retryable is *held* (never forwarded) when the
   policy, the retry budget and the deadline all allow a retry; anything else streams to the
   client as it arrives, with backpressure both ways;
4. failures become the proxy's own answer (errors.py): 503 no endpoints, 502 refused/reset,
   504 timeout.

It is a callback state machine, not a task: with an idle pooled connection at hand the request
goes upstream inside the client's read callback, and the response goes to the client inside
the upstream's read callback — no task, no future, no await per request (a task and its
wake-ups cost more CPU than the HTTP parsing). Only dialling a new connection runs as a task;
timeouts and retry backoff are loop timers; the outcome of a failed or held head is decided
on the next loop turn (``call_soon``), so error handling never re-enters the connection
callback that reported it.

Replay: the request body is kept (up to 64 KiB) so a retry can resend it; a larger or
still-streaming body makes the request non-replayable, and then only a failed connect (nothing
was sent) is retried. A pooled connection that turns out closed before answering anything is
redone once on a fresh connection for idempotent requests, without counting as a retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from hybridmesh.proxy.attempt import ERROR, RETRY, Attempt, Outcome
from hybridmesh.proxy.errors import ProxyError, Reason
from hybridmesh.proxy.peer_identity import rewrite_identity_headers
from hybridmesh.proxy.plan import Plan
from hybridmesh.proxy.policy_hook import PolicyDenied
from hybridmesh.proxy.protocols.http1 import EndOfMessage, Request, Response
from hybridmesh.proxy.retry import IDEMPOTENT_METHODS
from hybridmesh.proxy.streams import PAUSE_PREATTACH, Downstream, UpstreamStream
from hybridmesh.proxy.upstream import ConnectFailed, EndpointKey, Pool
from hybridmesh.telemetry.proxy_metrics import Peer

if TYPE_CHECKING:
    from hybridmesh.proxy.h2pool import H2Pool

__all__ = ["H2_APP_PROTOCOLS", "MAX_REPLAY_BODY", "ORIG_PROTO", "Exchange"]

log = logging.getLogger(__name__)

MAX_REPLAY_BODY = 64 * 1024
ORIG_PROTO = b"hm-orig-proto"
"""Marks an HTTP/1.1 request carried as an HTTP/2 stream between two meshed proxies."""
H2_APP_PROTOCOLS = frozenset(("http2", "grpc"))

_Timer = asyncio.Handle | asyncio.TimerHandle


class Exchange:
    """One request: its body, its attempts, its response, its telemetry."""

    __slots__ = ("_attempt", "_deadline", "_end", "_finished", "_fresh", "_keep_alive",
                 "_kept", "_kept_size", "_key", "_lb_started", "_mtls_peer", "_mtls_pools",
                 "_paused_down", "_pending", "_pending_size",
                 "_plan", "_sent_body", "_timer", "_tried", "_waiting", "authz", "ctx", "down",
                 "flags",
                 "grpc_status", "method", "request", "request_complete", "request_sent",
                 "response_started", "retries", "started", "status", "upstream_h2",
                 "was_started")

    def __init__(self, down: Downstream, request: Request) -> None:
        self.down = down
        self.ctx = down.ctx
        if request.http_version == b"1.0" and not any(n == b"host" for n, _ in request.headers):
            # HTTP/1.0 may omit Host; we always speak HTTP/1.1 upstream, which requires it
            authority = down.route.authority.encode("latin-1")
            request = replace(request, headers=(*request.headers, (b"host", authority)))
        identity_fields = down.route.identity_headers
        if identity_fields is not None:  # inbound: only verified identities reach the app
            request = rewrite_identity_headers(request, identity_fields)
        self.request = request
        self.method = request.method.decode("latin-1")
        self.started = time.monotonic()
        self.was_started = False  # start() was called
        self.request_complete = False
        self.request_sent = False  # head + whole body written to the current upstream
        self.response_started = False
        self.upstream_h2 = False
        self.retries = 0
        self.status = 0
        self.flags = "-"
        self.grpc_status = ""
        self._pending: list[bytes] = []  # body not yet written to an upstream
        self._pending_size = 0
        self._paused_down = False  # we paused the client's reads (PAUSE_PREATTACH)
        self._kept: list[bytes] | None = []  # whole body for replays (None: too big)
        self._kept_size = 0
        self._sent_body = False
        self._end: EndOfMessage | None = None
        self._attempt: Attempt | None = None
        self._plan: Plan | None = None
        self._key: EndpointKey | None = None
        self._tried: list[EndpointKey] = []
        self._lb_started = 0.0
        self._fresh = False  # this try's stale-connection redo is on a fresh connection
        self._waiting: asyncio.Task[Any] | None = None  # dialling
        self._timer: _Timer | None = None  # head/response timeout, backoff, or next step
        self._keep_alive = False
        self._deadline: float | None = None
        self._finished = False
        self._mtls_pools: tuple[Pool, H2Pool] | None = None  # this try's mTLS pools
        self._mtls_peer: Peer | None = None  # destination with its principal, over mTLS
        self.authz: tuple[bool, str] | None = None  # inbound: (allowed, deciding policy)

    def start(self) -> None:
        """Route the request and make the first try (no-op once the exchange is over)."""
        if self.was_started or self._finished:
            return
        self.was_started = True
        try:  # _guarded, inlined: this runs for every request
            self._begin()
        except ProxyError as err:
            self._fail(err)
        except Exception:
            self._internal_error()

    # -- request body (from the downstream) ---------------------------------------------------
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
            att.conn.send_body(data)
        else:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > MAX_REPLAY_BODY:
                self._paused_down = True
                self.down.pause_reading(PAUSE_PREATTACH, True)

    def request_end(self, event: EndOfMessage) -> None:
        self.request_complete = True
        self._end = event
        att = self._attempt
        if att is not None and not att.conn.closed:
            att.conn.send_end(event.trailers)
            self.request_sent = True

    def request_broken(self, detail: str) -> None:
        """The client's body violated the protocol mid-request: drop everything."""
        if not self._finished:
            self.flags = "DPE"
            self._abort_attempt()
            self._finish(self.status)

    def client_gone(self) -> None:
        if not self._finished:
            self.flags = "DC"
            self._abort_attempt()
            self._finish(self.status)

    def client_writable(self, writable: bool) -> None:
        att = self._attempt
        if att is not None:
            att.conn.pause_reading(not writable)

    # -- the attempts -----------------------------------------------------------------------
    def _guarded(self, step: Callable[..., None], *args: Any) -> None:
        """Run one step; its ProxyError is the answer, anything else is our bug (500)."""
        try:
            step(*args)
        except ProxyError as err:
            self._fail(err)
        except Exception:
            self._internal_error()

    def _internal_error(self) -> None:
        """A bug of ours: the client still gets an answer, we get a trace."""
        log.exception("exchange %s %r failed", self.method, self.request.target)
        self._fail(ProxyError(Reason.INTERNAL, self.where(self._key), "internal error"))

    def _begin(self) -> None:
        route = self.down.route
        try:
            self.request, self.authz = route.admit(self.request)
        except PolicyDenied as err:
            self.authz = err.verdict
            raise
        plan = self._plan = route.plan(self.request)
        if plan.budget is not None:
            plan.budget.deposit()
        if plan.request_timeout_s is not None:
            self._deadline = time.monotonic() + plan.request_timeout_s
        self._next_try()

    def _next_try(self) -> None:
        """Pick an endpoint (not tried yet, if possible) and send the request there."""
        self._timer = None
        if self._finished:
            return
        plan = self._plan
        assert plan is not None
        key = plan.pick(self._tried)
        if key is None:
            raise ProxyError(Reason.NO_ENDPOINTS, plan.destination,
                             "no ready (non-ejected) endpoint")
        self._key = key
        self._tried.append(key)
        self._mtls_pools, self._mtls_peer = None, None
        mesh = self.ctx.mtls
        if mesh is not None:  # a meshed peer: mTLS pools, or 503 no-identity (fail closed)
            choice = mesh.upstream(plan, key)
            if choice is not None:
                self._mtls_pools, self._mtls_peer = choice[:2], choice[2]
        bal = plan.balancer
        self._lb_started = bal.lb.start(key) if bal is not None else 0.0
        self.upstream_h2 = self._upstream_h2(plan, key)
        self._fresh = False
        self._acquire(key)

    def _acquire(self, key: EndpointKey) -> None:
        """An upstream stream now (pooled) or once dialled (a task)."""
        pools = self._mtls_pools
        if self.upstream_h2:
            h2pool = self.ctx.h2pool if pools is None else pools[1]
            stream = h2pool.ready_stream(key)
            if stream is None:
                self._dial(h2pool.open_stream(key))
            else:
                self._send(stream)
            return
        pool = self.ctx.pool if pools is None else pools[0]
        conn = None if self._fresh else pool.take_idle(key)
        if conn is None:  # a dial (bounded per endpoint), or a connection released meanwhile
            self._dial(pool.acquire(key, fresh=self._fresh))
        else:
            self._send(conn)

    def _dial(self, dial: Coroutine[Any, Any, UpstreamStream]) -> None:
        task = self._waiting = self.ctx.tasks.spawn(dial, name="hm-proxy-dial")
        task.add_done_callback(self._dialled)

    def _dialled(self, task: asyncio.Task[UpstreamStream]) -> None:
        if self._waiting is task:
            self._waiting = None
        if task.cancelled():  # by our own end (then a no-op), or by a shutdown
            self._finish(self.status)
            return
        exc = task.exception()
        if exc is None:
            if self._finished:  # ended just as the connection came up: keep it for others
                task.result().release()
            else:
                self._guarded(self._send, task.result())
            return
        if self._finished:
            return
        if isinstance(exc, ConnectFailed):
            key = self._key
            self.upstream_result(key, False, self._lb_started)  # type: ignore[arg-type]
            reason = Reason.CONNECT_TIMEOUT if exc.timeout else Reason.CONNECT_REFUSED
            if exc.reason is not None:
                reason = Reason(exc.reason)
            err = ProxyError(reason, self.where(key), exc.detail)
            self._guarded(self._decide, Outcome(ERROR, error=err))
        else:
            log.error("exchange %s %r: dialling failed", self.method, self.request.target,
                      exc_info=exc)
            self._fail(ProxyError(Reason.INTERNAL, self.where(self._key), "internal error"))

    def _upstream_h2(self, plan: Plan, key: EndpointKey) -> bool:
        """HTTP/2 upstream when the client spoke it (unless a peer proxy upgraded an
        HTTP/1.1 request, or the destination declares ``http``, HTTP/1.1 as in Istio: then
        HTTP/1.1, which the peer proxy and the app both read), when the destination declares
        http2/grpc, or for the meshed-proxy upgrade (``--upgrade-h2``, sidecar endpoints)."""
        down = self.down
        if down.protocol != "http1":
            if plan.app_protocol == "http":
                return False
            return not any(name == ORIG_PROTO for name, _ in self.request.headers)
        if plan.app_protocol in H2_APP_PROTOCOLS:
            return True
        return self.ctx.upgrade_h2 and plan.placement(key) == "sidecar"

    def _request_for(self, h2: bool) -> Request:
        """The request as sent upstream: marked when upgraded, unmarked for the app."""
        req = self.request
        if self.down.protocol == "http1":
            if h2:
                return replace(req, headers=(*req.headers, (ORIG_PROTO, b"HTTP/1.1")))
            return req
        if not h2:  # back to HTTP/1.1 for the app: our marker stays between proxies
            return replace(req, headers=tuple(f for f in req.headers if f[0] != ORIG_PROTO))
        return req

    def _send(self, conn: UpstreamStream) -> None:
        plan, key = self._plan, self._key
        assert plan is not None and key is not None
        att = self._attempt = Attempt(self, conn, key, self._lb_started)
        request = self.request
        conn.attach(att, request.method)
        body = self._body_to_send() if self._pending or self._sent_body else []
        down = self.down
        if self.upstream_h2 or down.protocol != "http1":
            request = self._request_for(self.upstream_h2)
        conn.send_request(request, body, self._end if self.request_complete else None)
        self.request_sent = self.request_complete
        if self._paused_down:
            self._paused_down = False
            down.pause_reading(PAUSE_PREATTACH, False)
        if down.write_paused:
            conn.pause_reading(True)
        if plan.backend_timeout_s is not None or self._deadline is not None:
            timeout = self._attempt_timeout(plan)
            if timeout is not None:
                self._timer = self._loop().call_later(timeout, self._head_timeout, att,
                                                      timeout)

    def _head_timeout(self, att: Attempt, timeout: float) -> None:
        self._timer = None
        if att is not self._attempt or att.head_done or self._finished:
            return
        att.head_done = True
        att.conn.detach()
        att.conn.abort()
        self.upstream_result(att.key, False, att.lb_started)
        err = ProxyError(Reason.TIMEOUT, self.where(att.key),
                         f"no response head within {timeout:.3f}s")
        self._guarded(self._decide, Outcome(ERROR, error=err))

    def _body_to_send(self) -> list[bytes]:
        if not self._sent_body:
            chunks, self._pending, self._pending_size = self._pending, [], 0
        else:
            chunks = list(self._kept or ())
        self._sent_body = self._sent_body or bool(chunks)
        return chunks

    def _attempt_timeout(self, plan: Plan) -> float | None:
        per_try = plan.backend_timeout_s
        if self._deadline is None:
            return per_try
        left = max(self._deadline - time.monotonic(), 0.0)
        return left if per_try is None else min(per_try, left)

    # -- head outcomes (from the attempt) ------------------------------------------------------
    def head_failed(self, outcome: Outcome) -> None:
        """Held for a retry or failed: decided on the next loop turn, outside the upstream's
        callback."""
        self._cancel_timer()
        self._timer = self._loop().call_soon(self._guarded, self._decide, outcome)

    def _decide(self, outcome: Outcome) -> None:
        """Redo on a fresh connection, retry after a backoff, or answer the error."""
        self._timer = None
        if self._finished:
            return
        plan, key = self._plan, self._key
        assert plan is not None and key is not None
        if outcome.stale and not self._fresh and self._replayable(idempotent_only=True):
            self._fresh = True  # a pooled connection the server had closed: redo on a fresh one
            self._acquire(key)
            return
        if outcome.kind != RETRY:
            err = outcome.error
            assert err is not None
            if not self.claim_retry(None, err.reason.value):
                raise err
        delay = plan.retry.backoff(self.retries - 1, self.ctx.rng)
        self._timer = self._loop().call_later(delay, self._guarded, self._next_try)

    def _response_timeout(self, att: Attempt) -> None:
        self._timer = None
        if self._finished or att is not self._attempt:
            return
        self.flags = "UT"
        self._abort_attempt()
        self.down.abort()
        self._finish(self.status)

    def response_failed(self, err: ProxyError) -> None:
        """The upstream broke off a response already being forwarded."""
        if not self._finished:
            self._fail(err)

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
        if plan is None or self.response_started or self.down.lost:
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
    def start_response(self, resp: Response, att: Attempt) -> None:
        """``att``'s response head goes to the client; the rest follows within the request
        deadline."""
        self.response_started = True
        self.status = resp.status
        request = self.request
        keep = request.keep_alive and self.request_complete and not self.ctx.draining
        self._keep_alive = self.down.send_head(request, resp, keep)
        for name, value in resp.headers:  # _grpc_status, inlined: this runs per response
            if name == b"grpc-status":
                self.grpc_status = value.decode("latin-1")
        if self._timer is not None:
            self._cancel_timer()
        if self._deadline is not None:
            left = max(self._deadline - time.monotonic(), 0.0)
            self._timer = self._loop().call_later(left, self._response_timeout, att)

    def response_end(self, event: EndOfMessage) -> None:
        if event.trailers:
            self._grpc_status(event.trailers)
        self.down.send_end(event.trailers)
        self.down.flush()
        self._attempt = None
        self._finish(self.status)

    def response_message(self, body: bytes, event: EndOfMessage) -> None:
        """The forwarded response's body and end, read in one go with its head."""
        down = self.down
        if body:
            down.send_body(body)
        if event.trailers:
            self._grpc_status(event.trailers)
        down.send_end(event.trailers)
        down.flush()
        self._attempt = None
        self._finish(self.status)

    def forward_message(self, resp: Response, body: bytes, event: EndOfMessage) -> None:
        """A whole response read in one go: :meth:`start_response` then
        :meth:`response_message`, without arming the response deadline for a response that
        is already complete."""
        self.response_started = True
        status = self.status = resp.status
        request, down = self.request, self.down
        keep = request.keep_alive and self.request_complete and not self.ctx.draining
        self._keep_alive = down.send_head(request, resp, keep)
        for name, value in resp.headers:  # _grpc_status, inlined: this runs per response
            if name == b"grpc-status":
                self.grpc_status = value.decode("latin-1")
        if body:
            down.send_body(body)
        trailers = event.trailers
        if trailers:
            self._grpc_status(trailers)
        down.send_end(trailers)
        down.flush()
        self._attempt = None
        self._finish(status)

    def _grpc_status(self, fields: tuple[tuple[bytes, bytes], ...]) -> None:
        for name, value in fields:
            if name == b"grpc-status":
                self.grpc_status = value.decode("latin-1")

    def where(self, key: EndpointKey | None) -> str:
        dest = self._plan.destination if self._plan is not None else self.down.route.destination
        return dest if key is None else f"{dest} via {key[0]}:{key[1]}"

    # -- the end -----------------------------------------------------------------------------
    def _fail(self, err: ProxyError) -> None:
        """The proxy answers for the upstream (or cuts a response it cannot complete)."""
        self._abort_attempt()
        self.ctx.metrics.proxy_error(err.reason.value)
        self.flags = err.reason.flag
        if self.response_started:
            self.down.abort()
            self._finish(self.status)
            return
        self._keep_alive = (self.request.keep_alive and self.request_complete
                            and not self.ctx.draining and err.code != 400)
        self.down.send_error(err, self._keep_alive)
        self.down.flush()
        self._finish(err.code)

    def _abort_attempt(self) -> None:
        att, self._attempt = self._attempt, None
        if att is not None and not att.finished:
            att.conn.detach()
            att.conn.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _loop(self) -> asyncio.AbstractEventLoop:
        return self.ctx.loop or asyncio.get_running_loop()

    def _finish(self, status: int) -> None:
        if self._finished:
            return
        self._finished = True
        if self._timer is not None:
            self._cancel_timer()
        if self._waiting is not None:
            self._waiting.cancel()
            self._waiting = None
        self.status = status
        ctx = self.ctx
        ctx.requests += 1
        plan, key, down = self._plan, self._key, self.down
        route = down.route
        if self._mtls_peer is not None:
            destination = self._mtls_peer
        elif plan is not None and key is not None:
            destination = plan.peer(key)
        else:
            destination = Peer.unknown()
        service = plan.service if plan is not None else route.service
        latency = time.monotonic() - self.started
        grpc = self.grpc_status
        ctx.metrics.record((route.reporter, route.source, destination, service,
                            "grpc" if grpc else "http", status, grpc, self.flags), latency)
        if ctx.access_log.enabled:
            self._log(service, destination, latency)
        if not down.lost:
            down.exchange_done(self._keep_alive)

    def _log(self, service: str, destination: Peer, latency: float) -> None:
        req, route = self.request, self.down.route
        headers = dict(req.headers)
        self.ctx.access_log.log({
            "start_time": time.time() - latency, "method": self.method,
            "path": req.target.decode("latin-1"),
            "protocol": "HTTP/2" if self.down.protocol != "http1" else
                        "HTTP/" + req.http_version.decode(),
            "response_code": self.status, "response_flags": self.flags,
            "duration_ms": round(latency * 1000.0, 3),
            "upstream_host": f"{self._key[0]}:{self._key[1]}" if self._key else None,
            "downstream_remote_address": self.down.remote,
            "source_workload": route.source.workload, "source_namespace": route.source.namespace,
            "destination_workload": destination.workload,
            "destination_namespace": destination.namespace, "destination_service": service,
            "route_name": self._plan.route if self._plan is not None else None,
            "authority": headers.get(b"host", b"").decode("latin-1"),
            "user_agent": headers.get(b"user-agent", b"").decode("latin-1"),
            "retry_count": self.retries, "grpc_status": self.grpc_status or None,
            "reporter": route.reporter,
            "authz_decision": None if self.authz is None else
                              ("allow" if self.authz[0] else "deny"),
            "authz_policy": None if self.authz is None else self.authz[1],
        })  # fmt: skip
