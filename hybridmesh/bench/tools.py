"""Command lines of the load tools and parsers of what they print (pure).

The tools: hybridmesh's open-loop ``loadgen`` (JSON summary; its ``/_hm/stats`` histograms
are read separately), ``wrk`` (text), ``h2load`` (its ``--log-file``: one line per request,
``<start µs> <status> <duration µs>``) and ``tcpperf`` (JSON).
"""

from __future__ import annotations

import json
import re
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hybridmesh.lab.workloads._stats import Histogram

__all__ = [
    "H2loadSummary",
    "ToolOutputError",
    "WrkResult",
    "grpc_frame",
    "grpc_h2load_argv",
    "h2load_argv",
    "last_json",
    "loadgen_argv",
    "parse_duration_s",
    "parse_h2load_log",
    "parse_h2load_summary",
    "parse_wrk",
    "tcpperf_argv",
    "wrk_argv",
]


class ToolOutputError(ValueError):
    """A load tool printed something the bench cannot read (it failed, or its format moved)."""


def loadgen_argv(target: str, rate: int, concurrency: int, stats_port: int) -> list[str]:
    return [
        sys.executable, "-m", "hybridmesh.lab.workloads.loadgen", "--target", target,
        "--rate", str(rate), "--concurrency", str(concurrency), "--stats-port", str(stats_port),
        "--stats-host", "127.0.0.1", "--json",
    ]  # fmt: skip


def wrk_argv(target: str, connections: int, seconds: float, *, latency: bool = True) -> list[str]:
    extra = ["--latency"] if latency else []
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", *extra, target]


def h2load_argv(
    target: str, clients: int, rate: int, seconds: float, log: str, *, warmup: float = 0.0
) -> list[str]:
    """``--rps`` is per client: ``rate`` is spread evenly over ``clients``. With a warm-up,
    the log file holds only the requests of the measured ``seconds``."""
    warm = ["--warm-up-time", f"{round(warmup * 1000)}ms"] if warmup > 0 else []
    return [
        "h2load", "--h1", "-c", str(clients), "--rps", f"{rate / clients:g}",
        "-D", f"{round(seconds * 1000)}ms", *warm, "--log-file", log, target,
    ]  # fmt: skip


def tcpperf_argv(mode: str, host: str, port: int, warmup: float, seconds: float) -> list[str]:
    return [
        sys.executable, "-m", "hybridmesh.bench.tcpperf", mode, "--host", host,
        "--port", str(port), "--warmup", f"{warmup:g}", "--duration", f"{seconds:g}",
    ]  # fmt: skip


def last_json(text: str) -> dict[str, Any]:
    """The last line of ``text`` that is a JSON object (tools log other lines around it)."""
    for raw in reversed(text.splitlines()):
        line = raw.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    raise ToolOutputError(f"no JSON result in the tool's output: {text[-500:]!r}")


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^([0-9.]+)(us|ms|s|m|h)$")


def parse_duration_s(text: str) -> float:
    """wrk's durations: ``471.00us``, ``0.93ms``, ``2.00s``, ``1.00m``."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ToolOutputError(f"not a duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx answers plus socket errors


_REQUESTS = re.compile(r"^\s*(\d+) requests in ([0-9.]+\w+),", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
_PERCENTILE = re.compile(r"^\s+(50|99)%\s+(\S+)$", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(text: str) -> WrkResult:
    """wrk's report (run with ``--latency`` for the percentiles)."""
    requests, rps = _REQUESTS.search(text), _RPS.search(text)
    if not requests or not rps:
        raise ToolOutputError(f"not a wrk report: {text[-500:]!r}")
    pct = {m.group(1): parse_duration_s(m.group(2)) * 1000 for m in _PERCENTILE.finditer(text)}
    errors = sum(int(n) for n in _NON_2XX.findall(text))
    if socket := _SOCKET.search(text):
        errors += sum(int(n) for n in socket.groups())
    return WrkResult(
        requests=int(requests.group(1)),
        seconds=parse_duration_s(requests.group(2)),
        rps=float(rps.group(1)),
        p50_ms=pct.get("50", 0.0),
        p99_ms=pct.get("99", 0.0),
        errors=errors,
    )


def parse_h2load_log(lines: Sequence[str]) -> tuple[Histogram, int]:
    """(latency histogram in µs, failed requests) from h2load's ``--log-file`` lines."""
    hist, failed = Histogram(), 0
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        try:
            status, duration = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        hist.record(duration)
        if not 200 <= status < 400:
            failed += 1
    return hist, failed


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message (uncompressed): flag byte, big-endian length, bytes."""
    return b"\x00" + struct.pack("!I", len(message)) + message


def grpc_h2load_argv(
    url: str, clients: int, streams: int, seconds: float, *, log: str, body: str, warmup: float
) -> list[str]:
    """h2load as a gRPC unary client over h2c: POST ``body`` (a framed message) with gRPC's
    headers on ``clients`` connections × ``streams`` concurrent streams for ``seconds``."""
    warm = ["--warm-up-time", f"{round(warmup * 1000)}ms"] if warmup > 0 else []
    return [
        "h2load", "-c", str(clients), "-m", str(streams), "-D", f"{round(seconds * 1000)}ms",
        *warm, "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", body,
        "--log-file", log, url,
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class H2loadSummary:
    seconds: float
    rps: float
    requests: int  # done
    succeeded: int
    failed: int  # failed + errored + timed out (h2load counts them apart)
    protocol: str  # "h2c", "http/1.1", ...


_H2_FINISHED = re.compile(r"^finished in ([0-9.]+\w+), ([0-9.]+) req/s", re.M)
_H2_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.M,
)
_H2_PROTOCOL = re.compile(r"^Application protocol: (\S+)", re.M)


def parse_h2load_summary(text: str) -> H2loadSummary:
    """h2load's closing summary (``finished in``, ``requests:`` and the protocol lines).

    h2load's "failed" only counts requests that got no 2xx/3xx; "errored" and "timeout" are
    counted apart and are failures here too."""
    finished, requests = _H2_FINISHED.search(text), _H2_REQUESTS.search(text)
    if not finished or not requests:
        raise ToolOutputError(f"not an h2load report: {text[-500:]!r}")
    _total, _started, done, ok, failed, errored, timeout = (int(g) for g in requests.groups())
    protocol = _H2_PROTOCOL.search(text)
    return H2loadSummary(
        seconds=parse_duration_s(finished.group(1)),
        rps=float(finished.group(2)),
        requests=done,
        succeeded=ok,
        failed=failed + errored + timeout,
        protocol=protocol.group(1) if protocol else "unknown",
    )
