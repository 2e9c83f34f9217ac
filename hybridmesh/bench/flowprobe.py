"""An open-loop HTTP prober that records every request, for the disruption scenarios.

    python3 -m hybridmesh.bench.flowprobe --target NAME=URL [--target ...] --rate R
        [--timeout S] [--concurrency C] --out FILE

Each target gets its own pool of keep-alive connections and requests due at ``start + i/R``
(open loop: a failing path does not slow the others or the probe). Unlike loadgen, which
keeps histograms, this keeps one record per request — ``(due, done, ok)`` on the system's
monotonic clock, shared with the bench that kills a proxy — because blast-radius and upgrade
ask *when* things failed and recovered, not only how many. It runs until SIGTERM, then writes
``{"targets": {NAME: [[due, done, ok], ...]}}`` to FILE. A request over ``--concurrency`` in
flight on its target is recorded as failed at once (the path is saturated, not slow).

Every ``--report-every`` seconds it prints one JSON line of cumulative counts,
``{"at": T, "ok": {NAME: n}, "failed": {NAME: n}}``, so the bench can wait until every path
works before it disturbs anything (:func:`healthy`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hybridmesh._aio import TaskSet
from hybridmesh._http import HttpClient, HttpClientError

__all__ = ["Record", "healthy", "main", "parse_targets"]

Record = tuple[float, float, bool]
"""(due, done, ok) on time.monotonic()"""


def parse_targets(specs: Sequence[str]) -> dict[str, str]:
    """``NAME=URL`` pairs; a bad one is a ValueError naming it."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url.startswith("http://"):
            raise ValueError(f"--target wants NAME=http://HOST[:PORT]/PATH, got {spec!r}")
        out[name] = url
    return out


def healthy(log: str) -> bool:
    """True when the last two progress lines of a flowprobe log show every target with new
    successes and no new failures between them."""
    reports = []
    for line in log.splitlines():
        if line.startswith('{"at"'):
            with contextlib.suppress(ValueError):
                reports.append(json.loads(line))
    if len(reports) < 2:
        return False
    before, now = reports[-2], reports[-1]
    return bool(now["ok"]) and all(
        now["ok"][t] > before["ok"].get(t, 0)
        and now["failed"].get(t, 0) == before["failed"].get(t, 0)
        for t in now["ok"]
    )


class _Path:
    """One target's open-loop sender."""

    def __init__(self, url: str, rate: float, timeout: float, concurrency: int) -> None:
        self.url, self.rate, self.timeout, self.concurrency = url, rate, timeout, concurrency
        self.client = HttpClient()
        self.records: list[Record] = []
        self.in_flight = 0
        self.tasks = TaskSet()

    async def run(self, stop: asyncio.Event) -> None:
        start, i = time.monotonic(), 0
        while not stop.is_set():
            due = start + i / self.rate
            i += 1
            delay = due - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            if self.in_flight >= self.concurrency:
                self.records.append((due, time.monotonic(), False))
                continue
            self.in_flight += 1
            self.tasks.spawn(self._one(due), name="flowprobe-request")
        deadline = time.monotonic() + self.timeout + 0.5  # in flight: finish or time out
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.tasks.cancel_all()
        await self.client.close()

    async def _one(self, due: float) -> None:
        ok = False
        try:
            response = await self.client.request("GET", self.url, timeout=self.timeout)
            ok = 200 <= response.status < 400
        except (HttpClientError, OSError):
            ok = False
        finally:
            self.in_flight -= 1
            self.records.append((due, time.monotonic(), ok))


async def _probe(targets: dict[str, str], args: argparse.Namespace) -> dict[str, list[Record]]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    paths = {n: _Path(u, args.rate, args.timeout, args.concurrency) for n, u in targets.items()}
    print(json.dumps({"started": time.monotonic(), "targets": list(targets)}), flush=True)
    tasks = TaskSet()
    tasks.spawn(_report(paths, args.report_every, stop), name="flowprobe-report")
    await asyncio.gather(*(p.run(stop) for p in paths.values()))
    await tasks.cancel_all()
    return {name: sorted(p.records) for name, p in paths.items()}


async def _report(paths: dict[str, _Path], every: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        ok = {n: sum(1 for r in p.records if r[2]) for n, p in paths.items()}
        failed = {n: len(p.records) - ok[n] for n, p in paths.items()}
        print(json.dumps({"at": time.monotonic(), "ok": ok, "failed": failed}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="flowprobe", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", action="append", required=True, metavar="NAME=URL")
    p.add_argument("--rate", type=float, required=True, help="requests/s per target")
    p.add_argument("--timeout", type=float, default=1.0, help="per-request timeout, seconds")
    p.add_argument("--concurrency", type=int, default=256, help="max in flight per target")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--report-every", type=float, default=0.25, help="progress line, seconds")
    args = p.parse_args(argv)
    try:
        targets = parse_targets(args.target)
    except ValueError as exc:
        p.error(str(exc))
    if args.rate <= 0:
        p.error("--rate must be positive")
    records = asyncio.run(_probe(targets, args))
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"targets": records}, separators=(",", ":")))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
