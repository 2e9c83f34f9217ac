"""An open-loop HTTP load client that does not hide queueing (coordinated omission handled).

    python3 -m hybridmesh.lab.workloads.loadgen --target URL --rate R [--duration S]
        [--concurrency C] [--stats-port P] [--json]

Request *i* is due at ``start + i/R`` whatever happened to earlier ones, and its latency is
measured from that due time, not from when it was finally sent. A closed-loop client (wrk,
hey) waits for an answer before sending the next request, so a stall of the server also
stalls the measurement and the slow period is under-represented; here a stall shows up as
the queue of due requests it really causes. At most C requests are in flight (one
connection each); a due request that finds all C busy waits, and that wait is in its latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hybridmesh._http import (
    HttpClient,
    HttpClientError,
    HttpServer,
    Request,
    Response,
    Router,
    install_uvloop,
)

from ._identity import PodIdentity, edge_name, stats_document
from ._stats import EdgeStats, Histogram

__all__ = ["LoadConfig", "LoadGenerator", "main", "parse_args"]


@dataclass(frozen=True, slots=True)
class LoadConfig:
    target: str
    rate: float
    duration: float = 0.0
    concurrency: int = 32
    stats_port: int | None = None
    stats_host: str = "0.0.0.0"
    json: bool = False
    timeout: float = 10.0
    method: str = "GET"


class LoadGenerator:
    """Schedules requests at fixed intervals and records their latency from the due time."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.edge = EdgeStats()
        self.statuses: Counter[str] = Counter()
        self.unsent = 0
        self._client = HttpClient(max_idle_per_host=config.concurrency)
        self._queue: asyncio.Queue[float] = asyncio.Queue()
        self._stopped = False
        self._ticker: _Ticker | None = None
        self._started = 0.0
        self._cpu_at_start = 0.0
        self.send_lag = Histogram()
        """Due time to send time: how late the generator itself was (scheduler + pool wait)."""
        self.service_time = Histogram()
        """Send time to response: what a closed-loop client would report (hides queueing)."""
        self._sending_s = 0.0

    def stop(self) -> None:
        self._stopped = True
        if self._ticker is not None:
            self._ticker.stop()

    async def run(self) -> None:
        """Send until the duration is over or :meth:`stop`; then wait for answers (bounded)."""
        loop = asyncio.get_running_loop()
        workers = [loop.create_task(self._worker()) for _ in range(self.config.concurrency)]
        self._cpu_at_start = _cpu_seconds()
        self._started = time.perf_counter()
        await self._schedule()
        elapsed = time.perf_counter() - self._started
        # a run that reached its duration sent for exactly that long (the last request is due
        # one interval before the end, which must not inflate the achieved rate)
        natural_end = self.config.duration > 0 and not self._stopped
        self._sending_s = max(elapsed, self.config.duration) if natural_end else elapsed
        with contextlib.suppress(TimeoutError):  # past the request timeout: stop waiting
            await asyncio.wait_for(self._queue.join(), self.config.timeout + 1)
        self.unsent = self._queue.qsize()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await self._client.close()

    async def _schedule(self) -> None:
        """Run the clock in a thread until the duration is over or :meth:`stop`.

        Event-loop timers have 1 ms resolution (uvloop rounds shorter delays to "now"), which
        made requests ~0.6 ms late on average — as much as the overhead the bench measures.
        A thread sleeping on a condition variable wakes within tens of µs and hands each due
        time to the loop; the loop thread stays free for the responses.
        """
        loop = asyncio.get_running_loop()
        end = self.config.duration if self.config.duration > 0 else float("inf")
        ticker = _Ticker(self.config.rate, self._started, end, loop, self._enqueue)
        self._ticker = ticker
        if not self._stopped:
            await loop.run_in_executor(None, ticker.run)

    def _enqueue(self, due_times: list[float]) -> None:
        for due in due_times:
            self._queue.put_nowait(due)

    async def _worker(self) -> None:
        while True:
            due = await self._queue.get()
            try:
                await self._one(due)
            finally:
                self._queue.task_done()

    async def _one(self, due: float) -> None:
        sent = time.perf_counter()
        self.send_lag.record((sent - due) * 1e6)
        ok = False
        try:
            response = await self._client.request(
                self.config.method, self.config.target, timeout=self.config.timeout
            )
            ok = 200 <= response.status < 300
            self.statuses[str(response.status)] += 1
        except HttpClientError as exc:
            self.statuses[type(exc).__name__] += 1
        done = time.perf_counter()
        self.edge.record((done - due) * 1e6, ok)
        self.service_time.record((done - sent) * 1e6)

    def summary(self) -> dict[str, Any]:
        elapsed = self._sending_s or (time.perf_counter() - self._started)
        cpu_s = _cpu_seconds() - self._cpu_at_start
        hist = self.edge.latency
        return {
            "target": self.config.target,
            "requested_rate": self.config.rate,
            "duration_s": round(elapsed, 3),
            "requests": self.edge.requests,
            "errors": self.edge.errors,
            "unsent": self.unsent,
            "achieved_rate": round(self.edge.requests / elapsed, 2) if elapsed else 0.0,
            "p50_ms": round(hist.percentile(50) / 1000, 3),
            "p90_ms": round(hist.percentile(90) / 1000, 3),
            "p99_ms": round(hist.percentile(99) / 1000, 3),
            "p999_ms": round(hist.percentile(99.9) / 1000, 3),
            "mean_ms": round(hist.mean_us / 1000, 3),
            "statuses": dict(sorted(self.statuses.items())),
            "service_p50_ms": round(self.service_time.percentile(50) / 1000, 3),
            "service_p99_ms": round(self.service_time.percentile(99) / 1000, 3),
            "send_lag_p50_ms": round(self.send_lag.percentile(50) / 1000, 3),
            "send_lag_p99_ms": round(self.send_lag.percentile(99) / 1000, 3),
            "cpu_percent": round(100 * cpu_s / elapsed, 1) if elapsed else 0.0,
        }


class _Ticker:
    """The request clock: hands due times to the event loop, batched when they pile up."""

    def __init__(
        self,
        rate: float,
        started: float,
        duration: float,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[list[float]], None],
    ) -> None:
        self._interval = 1.0 / rate
        self._started = started
        self._end = started + duration
        self._loop = loop
        self._deliver = deliver
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        sent = 0
        while not self._stop.is_set():
            due = self._started + sent * self._interval
            if due >= self._end:
                return
            delay = due - time.perf_counter()
            if delay > 0 and self._stop.wait(delay):
                return
            now, batch = time.perf_counter(), []
            while due <= now and due < self._end:  # catch up: each keeps its own due time
                batch.append(due)
                sent += 1
                due = self._started + sent * self._interval
            self._loop.call_soon_threadsafe(self._deliver, batch)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def human_line(s: dict[str, Any]) -> str:
    return (
        f"{s['requests']} requests to {s['target']} in {s['duration_s']}s "
        f"({s['achieved_rate']}/s of {s['requested_rate']}/s requested), {s['errors']} errors; "
        f"latency p50 {s['p50_ms']} ms, p90 {s['p90_ms']} ms, p99 {s['p99_ms']} ms, "
        f"p99.9 {s['p999_ms']} ms; send lag p99 {s['send_lag_p99_ms']} ms, "
        f"loadgen cpu {s['cpu_percent']}%"
    )


def stats_router(gen: LoadGenerator, identity: PodIdentity) -> Router:
    """``/_hm/stats`` in the same shape as httpsvc, so the bench reads both alike."""
    router = Router()
    edge = edge_name(gen.config.target)

    async def stats(req: Request, params: dict[str, str]) -> Response:
        return Response.json(stats_document(identity, "loadgen", {edge: gen.edge}))

    async def healthz(req: Request, params: dict[str, str]) -> Response:
        return Response.text("ok\n")

    router.add("GET", "/_hm/stats", stats)
    router.add("GET", "/healthz", healthz)
    return router


def parse_args(argv: Sequence[str] | None = None) -> LoadConfig:
    p = argparse.ArgumentParser(prog="loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="URL, e.g. http://frontend/")
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until SIGTERM")
    p.add_argument("--concurrency", type=int, default=32, help="max requests in flight")
    p.add_argument("--stats-port", type=int, help="serve GET /_hm/stats on this port")
    p.add_argument("--stats-host", default="0.0.0.0")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    p.add_argument("--method", default="GET")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = p.parse_args(argv)
    if not a.target.startswith("http://"):
        p.error(f"--target {a.target!r}: expected an http:// URL, e.g. http://frontend/")
    if a.rate <= 0 or a.concurrency < 1 or a.duration < 0 or a.timeout <= 0:
        p.error("--rate and --timeout must be > 0, --concurrency >= 1, --duration >= 0")
    return LoadConfig(
        target=a.target,
        rate=a.rate,
        duration=a.duration,
        concurrency=a.concurrency,
        stats_port=a.stats_port,
        stats_host=a.stats_host,
        json=a.json,
        timeout=a.timeout,
        method=a.method.upper(),
    )


async def _main(config: LoadConfig) -> dict[str, Any]:
    gen = LoadGenerator(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gen.stop)
    server: HttpServer | None = None
    if config.stats_port is not None:
        server = HttpServer(stats_router(gen, PodIdentity.from_env(None, "loadgen")))
        try:
            port = await server.start_tcp(config.stats_host, config.stats_port)
        except OSError as exc:
            where = f"{config.stats_host}:{config.stats_port}"
            raise SystemExit(f"loadgen: cannot listen on {where}: {exc.strerror}") from None
        # stderr: stdout carries only the summary, so `--json` output stays parseable
        print(f"loadgen stats on {config.stats_host}:{port}", file=sys.stderr, flush=True)
    try:
        await gen.run()
    finally:
        if server is not None:
            await server.close(timeout=1)
    return gen.summary()


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    install_uvloop()
    summary = asyncio.run(_main(config))
    print(json.dumps(summary) if config.json else human_line(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
