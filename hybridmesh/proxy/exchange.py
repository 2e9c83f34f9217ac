"""One request through the proxy: route, pick, connect, forward, retry, answer.

An :class:`Exchange` is created per request by a downstream session (HTTP/1.1 connection or
HTTP/2 stream, see streams.py). Its task runs the attempts:

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

from hybridmesh.proxy.attempt import FORWARDED, RETRY, Attempt, Outcome
from hybridmesh.proxy.errors import ProxyError, Reason
from hybridmesh.proxy.peer_identity import rewrite_identity_headers
from hybridmesh.proxy.plan import Plan
from hybridmesh.proxy.protocols.http1 import EndOfMessage, Request, Response
from hybridmesh.proxy.retry import IDEMPOTENT_METHODS
from hybridmesh.proxy.streams import PAUSE_PREATTACH, Downstream, UpstreamStream
from hybridmesh.proxy.upstream import ConnectFailed, EndpointKey
from hybridmesh.telemetry.proxy_metrics import Peer

__all__ = ["H2_APP_PROTOCOLS", "MAX_REPLAY_BODY", "ORIG_PROTO", "Exchange"]

log = logging.getLogger(__name__)

MAX_REPLAY_BODY = 64 * 1024
ORIG_PROTO = b"hm-orig-proto"
"""Marks an HTTP/1.1 request carried as an HTTP/2 stream between two meshed proxies."""
H2_APP_PROTOCOLS = frozenset(("http2", "grpc"))


class Exchange:
    """One request: its body, its attempts, its response, its telemetry."""

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
        self._kept: list[bytes] | None = []  # whole body for replays (None: too big)
        self._kept_size = 0
        self._sent_body = False
        self._end: EndOfMessage | None = None
        self._attempt: Attempt | None = None
        self._plan: Plan | None = None
        self._key: EndpointKey | None = None
        self._task: asyncio.Task[None] | None = None
        self._keep_alive = False
        self._deadline: float | None = None
        self._finished = False
        self._mtls_peer: Peer | None = None  # destination with its principal, over mTLS

    def start(self) -> None:
        self._task = self.ctx.tasks.spawn(self._run())

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
        plan = self._plan = self.down.route.plan(self.request)
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
            if outcome.kind == FORWARDED:
                await self._until_done(outcome.attempt)
                return
            if outcome.kind != RETRY:
                err = outcome.error
                assert err is not None
                if not self.claim_retry(None, err.reason.value):
                    raise err
            await asyncio.sleep(plan.retry.backoff(self.retries - 1, self.ctx.rng))

    async def _try(self, plan: Plan, key: EndpointKey) -> Outcome:
        pool, h2pool = self.ctx.pool, self.ctx.h2pool
        mesh, self._mtls_peer = self.ctx.mtls, None
        if mesh is not None:  # a meshed peer: mTLS pools, or 503 no-identity (fail closed)
            choice = mesh.upstream(plan, key)
            if choice is not None:
                pool, h2pool, self._mtls_peer = choice
        bal = plan.balancer
        started = bal.lb.start(key) if bal is not None else 0.0
        self.upstream_h2 = h2 = self._upstream_h2(plan, key)
        for fresh in (False, True):
            try:
                if h2:
                    conn: UpstreamStream = await h2pool.open_stream(key)
                else:
                    conn = await pool.acquire(key, fresh=fresh)
            except ConnectFailed as exc:
                self.upstream_result(key, False, started)
                reason = Reason.CONNECT_TIMEOUT if exc.timeout else Reason.CONNECT_REFUSED
                if exc.reason is not None:
                    reason = Reason(exc.reason)
                return Outcome("error", error=ProxyError(reason, self.where(key), exc.detail))
            outcome = await self._send(key, conn, started)
            if outcome.stale and self._replayable(idempotent_only=True):
                continue  # a pooled connection the server had closed: redo on a fresh one
            return outcome
        raise AssertionError("unreachable")

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
        return self.ctx.config.upgrade_h2 and plan.placement(key) == "sidecar"

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

    async def _send(self, key: EndpointKey, conn: UpstreamStream, started: float) -> Outcome:
        plan = self._plan
        assert plan is not None
        att = self._attempt = Attempt(self, conn, key, started)
        conn.attach(att, self.request.method)
        conn.send_request(self._request_for(self.upstream_h2), self._body_to_send(),
                          self._end if self.request_complete else None)
        self.request_sent = self.request_complete
        self.down.pause_reading(PAUSE_PREATTACH, False)
        if self.down.write_paused:
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
            return Outcome("error", error=ProxyError(Reason.TIMEOUT, self.where(key),
                                                     f"no response head within {timeout:.3f}s"))

    def _body_to_send(self) -> list[bytes]:
        if not self._sent_body:
            chunks, self._pending, self._pending_size = self._pending, [], 0
        else:
            chunks = list(self._kept or ())
        self._sent_body = self._sent_body or bool(chunks)
        return chunks

    async def _until_done(self, att: Attempt | None) -> None:
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
            self.down.abort()
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
    def start_response(self, resp: Response) -> None:
        self.response_started = True
        self.status = resp.status
        keep = self.request.keep_alive and self.request_complete and not self.ctx.draining
        self._keep_alive = self.down.send_head(self.request, resp, keep)
        self._grpc_status(resp.headers)

    def response_end(self, event: EndOfMessage) -> None:
        self._grpc_status(event.trailers)
        self.down.send_end(event.trailers)
        self.down.flush()
        self._attempt = None
        self._finish(self.status)

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

    def _finish(self, status: int) -> None:
        if self._finished:
            return
        self._finished = True
        self.status = status
        self.ctx.requests += 1
        plan, key, route = self._plan, self._key, self.down.route
        destination = plan.peer(key) if plan is not None and key is not None else Peer.unknown()
        if self._mtls_peer is not None:
            destination = self._mtls_peer
        service = plan.service if plan is not None else route.service
        latency = time.monotonic() - self.started
        protocol = "grpc" if self.grpc_status else "http"
        self.ctx.metrics.request(
            reporter=route.reporter, source=route.source, destination=destination,
            service=service, protocol=protocol, status=status, grpc_status=self.grpc_status,
            flags=self.flags, latency_s=latency,
        )  # fmt: skip
        if self.ctx.access_log.enabled:
            self._log(service, destination, latency)
        if not self.down.lost:
            self.down.exchange_done(self._keep_alive)

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
        })  # fmt: skip
