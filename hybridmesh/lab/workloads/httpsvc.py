"""The demo backend: a fast HTTP/1.1 service with an optional call graph.

    python3 -m hybridmesh.lab.workloads.httpsvc --port 8080 [--name N] [--call URL]...
        [--response-size 1024] [--fail-rate 0.0] [--latency-ms 0] [--stats-path /_hm/stats]

Every benchmark measures the mesh against this process, so its own cost per request must be
small: a raw asyncio.Protocol on uvloop, httptools with only the callbacks it needs, canned
responses as pre-built bytes, and the no-call request answered synchronously inside
``data_received`` — no task, no coroutine, no header parsing. Only requests that need to wait
(``--latency-ms``, ``--call``) take the slower ordered path; pipelined answers still leave in
request order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httptools

from hybridmesh._http import HttpClient, HttpClientError, install_uvloop

from ._identity import PodIdentity, edge_name, stats_document
from ._stats import EdgeStats

__all__ = ["Service", "ServiceConfig", "main", "parse_args"]


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    port: int
    host: str = "0.0.0.0"
    name: str | None = None
    calls: tuple[str, ...] = ()
    response_size: int = 1024
    fail_rate: float = 0.0
    latency_ms: float = 0.0
    stats_path: str = "/_hm/stats"
    call_timeout: float = 5.0


def _response(status: str, body: bytes, content_type: bytes, keep_alive: bool) -> bytes:
    conn = b"" if keep_alive else b"Connection: close\r\n"
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + conn + b"\r\n" + body
    )  # fmt: skip


_TEXT = b"text/plain"
_JSON = b"application/json"


class _Slot:
    """A response position on a connection, filled when its (delayed) answer is ready."""

    __slots__ = ("data", "keep_alive")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.keep_alive = True


class _Connection(asyncio.Protocol):
    def __init__(self, svc: Service) -> None:
        self._svc = svc
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._slots: deque[_Slot] = deque()
        self._closed = False
        self._broken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._svc.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._svc.connections.discard(self)

    @property
    def idle(self) -> bool:
        return not self._slots

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._closed or self._broken:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._broken = True  # answer once, after any pending responses, then close
            self._send(_response("400 Bad Request", b"malformed request\n", _TEXT, False), False)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        url, self._url = self._url, b""
        keep_alive = bool(self._parser.should_keep_alive()) and not self._svc.closing
        svc = self._svc
        svc.served += 1
        if url.startswith(b"/healthz") or url.startswith(svc.stats_path):
            body = b"ok\n" if url.startswith(b"/healthz") else svc.stats_json()
            ctype = _TEXT if url.startswith(b"/healthz") else _JSON
            self._send(_response("200 OK", body, ctype, keep_alive), keep_alive)
        elif svc.fail_rate and random.random() < svc.fail_rate:
            svc.injected_failures += 1
            self._send(svc.fail_response(keep_alive), keep_alive)
        elif svc.needs_wait:
            slot = _Slot()
            slot.keep_alive = keep_alive
            self._slots.append(slot)
            svc.answer_later(self, slot)
        else:
            self._send(svc.ok_response(keep_alive), keep_alive)

    def _send(self, data: bytes, keep_alive: bool) -> None:
        if self._slots:  # earlier answers are still pending: queue behind them
            slot = _Slot()
            slot.data, slot.keep_alive = data, keep_alive
            self._slots.append(slot)
            return
        self._write(data, keep_alive)

    def _write(self, data: bytes, keep_alive: bool) -> None:
        if self._transport is None or self._closed:
            return
        self._transport.write(data)
        if not keep_alive:
            self.close()

    def fill(self, slot: _Slot, data: bytes) -> None:
        slot.data = data
        while self._slots and self._slots[0].data is not None:
            ready = self._slots.popleft()
            assert ready.data is not None
            self._write(ready.data, ready.keep_alive and not self._svc.closing)
        self._svc.maybe_drained()


class Service:
    """The listening service: canned answers, the outbound call fan-out, and its statistics."""

    def __init__(self, config: ServiceConfig, identity: PodIdentity) -> None:
        self.config = config
        self.identity = identity
        self.stats_path = config.stats_path.encode()
        self.fail_rate = config.fail_rate
        self.needs_wait = bool(config.calls) or config.latency_ms > 0
        self.closing = False
        self.served = 0
        self.injected_failures = 0
        self.connections: set[_Connection] = set()
        self.edges = {edge_name(url): EdgeStats() for url in config.calls}
        self._targets = [(url, self.edges[edge_name(url)]) for url in config.calls]
        self._in_flight = 0
        self._drained: asyncio.Event | None = None
        self._client = HttpClient()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        body = b"x" * config.response_size
        self._ok = (_response("200 OK", body, _TEXT, True), _response("200 OK", body, _TEXT, False))
        fail = b"injected failure\n"
        self._fail = (
            _response("500 Internal Server Error", fail, _TEXT, True),
            _response("500 Internal Server Error", fail, _TEXT, False),
        )

    def ok_response(self, keep_alive: bool) -> bytes:
        return self._ok[0] if keep_alive else self._ok[1]

    def fail_response(self, keep_alive: bool) -> bytes:
        return self._fail[0] if keep_alive else self._fail[1]

    def stats_json(self) -> bytes:
        doc = stats_document(
            self.identity,
            "httpsvc",
            self.edges,
            served=self.served,
            injected_failures=self.injected_failures,
        )
        return json.dumps(doc, separators=(",", ":")).encode()

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.config.host, self.config.port, backlog=4096
        )
        return int(self._server.sockets[0].getsockname()[1])

    def answer_later(self, conn: _Connection, slot: _Slot) -> None:
        self._in_flight += 1
        if not self.config.calls:  # latency only: a timer is far cheaper than a task
            loop = asyncio.get_running_loop()
            loop.call_later(self.config.latency_ms / 1000, self._finish, conn, slot, None)
            return
        task = asyncio.get_running_loop().create_task(self._call_graph(conn, slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finish(self, conn: _Connection, slot: _Slot, data: bytes | None) -> None:
        self._in_flight -= 1
        conn.fill(slot, data if data is not None else self.ok_response(slot.keep_alive))

    async def _call_graph(self, conn: _Connection, slot: _Slot) -> None:
        try:
            if self.config.latency_ms > 0:
                await asyncio.sleep(self.config.latency_ms / 1000)
            if len(self._targets) == 1:  # the common chain case: skip gather's bookkeeping
                results = [await self._call(*self._targets[0])]
            else:
                results = await asyncio.gather(*(self._call(*t) for t in self._targets))
            failed = [r for r in results if "error" in r or not 200 <= r["status"] < 300]
            doc = {
                "service": self.identity.service,
                "pod": self.identity.pod,
                "calls": results,
            }
            status = "200 OK"
            if failed:
                status, doc["failed"] = "502 Bad Gateway", failed[0]["url"]
            body = json.dumps(doc, separators=(",", ":")).encode()
            data = _response(status, body, _JSON, slot.keep_alive)
        except Exception as exc:  # never leave a client without its answer
            data = _response("500 Internal Server Error", f"{exc!r}\n".encode(), _TEXT, False)
        self._finish(conn, slot, data)

    async def _call(self, url: str, edge: EdgeStats) -> dict[str, Any]:
        start = time.perf_counter_ns()
        result: dict[str, Any] = {"url": url}
        try:
            response = await self._client.request("GET", url, timeout=self.config.call_timeout)
            result["status"] = response.status
            ok = 200 <= response.status < 300
        except HttpClientError as exc:
            result["status"], result["error"] = None, str(exc)
            ok = False
        elapsed_us = (time.perf_counter_ns() - start) / 1000
        edge.record(elapsed_us, ok)
        result["ms"] = round(elapsed_us / 1000, 3)
        return result

    def maybe_drained(self) -> None:
        if self._drained is not None and self._in_flight == 0:
            self._drained.set()

    async def shutdown(self, grace: float = 30.0) -> None:
        """Stop accepting, let in-flight requests finish (bounded by ``grace``), close the rest."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
        self._drained = asyncio.Event()
        self.maybe_drained()
        try:
            await asyncio.wait_for(self._drained.wait(), grace)
        except TimeoutError:
            print(f"httpsvc: {self._in_flight} requests still running at exit", file=sys.stderr)
        for conn in list(self.connections):
            conn.close()
        await self._client.close()


def parse_args(argv: Sequence[str] | None = None) -> ServiceConfig:
    p = argparse.ArgumentParser(prog="httpsvc", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="0.0.0.0", help="address to bind (default: all)")
    p.add_argument("--name", help="service name (default: POD_NAME minus replica suffix)")
    p.add_argument("--call", action="append", default=[], metavar="URL", help="call per request")
    p.add_argument("--response-size", type=int, default=1024, metavar="BYTES")
    p.add_argument("--fail-rate", type=float, default=0.0, metavar="P")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--stats-path", default="/_hm/stats")
    p.add_argument("--call-timeout", type=float, default=5.0, metavar="SECONDS")
    args = p.parse_args(argv)
    if not 0.0 <= args.fail_rate <= 1.0:
        p.error(f"--fail-rate must be within 0..1, got {args.fail_rate}")
    if args.response_size < 0 or args.latency_ms < 0 or args.call_timeout <= 0:
        p.error("--response-size, --latency-ms must be >= 0 and --call-timeout > 0")
    for url in args.call:
        if not url.startswith("http://"):
            p.error(f"--call {url!r}: expected an http:// URL, e.g. http://catalog/")
    return ServiceConfig(
        port=args.port,
        host=args.host,
        name=args.name,
        calls=tuple(args.call),
        response_size=args.response_size,
        fail_rate=args.fail_rate,
        latency_ms=args.latency_ms,
        stats_path=args.stats_path,
        call_timeout=args.call_timeout,
    )


async def _serve(config: ServiceConfig) -> None:
    service = Service(config, PodIdentity.from_env(config.name, "httpsvc"))
    try:
        port = await service.start()
    except OSError as exc:
        msg = f"httpsvc: cannot listen on {config.host}:{config.port}: {exc.strerror}"
        raise SystemExit(msg) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    calls = " ".join(config.calls) or "none"
    print(f"httpsvc {service.identity.service} on {config.host}:{port} calls: {calls}", flush=True)
    await stop.wait()
    await service.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    install_uvloop()
    asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
