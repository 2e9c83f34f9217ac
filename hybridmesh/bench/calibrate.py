"""Why loadgen and not h2load for latency: both measured on ``none`` at the same rate.

``h2load --h1 --rps`` is a precise C client, but it times a request from when it was *sent*:
when a connection is busy the next request waits unseen, and its wait is not in the figure
(coordinated omission). hybridmesh's loadgen times from when the request was *due*, so a
stall is reported as the queue it really causes; the price is its own lateness in sending
(the send lag it reports: a Python scheduler thread handing due times to the event loop).

The calibration runs both against the baseline and records the two distributions and
loadgen's send lag and service time. The send lag is the same whichever contender is
measured, so the *added* latency (contender − none) does not contain it, while ratios are
diluted by it; the report states how much.
"""

from __future__ import annotations

from hybridmesh.bench.bed import TestBed
from hybridmesh.bench.measure import HTTP_TARGET, Executor, RunError
from hybridmesh.bench.model import CalibrationDoc
from hybridmesh.bench.schedule import CellKey, Run
from hybridmesh.bench.tools import h2load_argv, last_json, parse_h2load_log
from hybridmesh.bench.topology import client_pod

__all__ = ["H2LOAD_CLIENTS", "calibrate"]

H2LOAD_CLIENTS = 4


def _h2load(bed: TestBed, variant: str, rate: int, warmup: float, seconds: float) -> CalibrationDoc:
    client = client_pod("none", variant)
    log = bed.workdir / "logs" / f"h2load-{variant}-{rate}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = h2load_argv(HTTP_TARGET, H2LOAD_CLIENTS, rate, seconds, str(log), warmup=warmup)
    done = bed.run_tool(client, argv, f"h2load-{variant}", seconds + warmup + 30)
    if done.returncode != 0:
        raise RunError(f"h2load in {client.key} failed: {done.output[-400:]}")
    hist, _failed = parse_h2load_log(log.read_text().splitlines())
    ms = hist.summary_ms()
    return CalibrationDoc(
        tool="h2load", variant=variant, rate=rate, requests=hist.count,
        p50_ms=ms["p50"], p90_ms=ms["p90"], p99_ms=ms["p99"], p999_ms=ms["p999"],
    )  # fmt: skip


def _loadgen(
    executor: Executor, variant: str, rate: int, warmup: float, seconds: float
) -> CalibrationDoc:
    run = Run(CellKey("http-latency", variant, rate), "none", 0, -1, warmup, seconds)
    sample = executor.measure(run)
    m = sample.metrics
    summary = last_json(executor.last_loadgen_output)
    return CalibrationDoc(
        tool="loadgen", variant=variant, rate=rate,
        requests=round(m["rps"] * sample.wall_s),
        p50_ms=m["p50_ms"], p90_ms=m["p90_ms"], p99_ms=m["p99_ms"], p999_ms=m["p999_ms"],
        send_lag_p50_ms=float(summary["send_lag_p50_ms"]),
        send_lag_p99_ms=float(summary["send_lag_p99_ms"]),
        service_p50_ms=float(summary["service_p50_ms"]),
        service_p99_ms=float(summary["service_p99_ms"]),
    )  # fmt: skip


def calibrate(
    bed: TestBed,
    executor: Executor,
    variants: list[str],
    *,
    rate: int,
    warmup: float,
    seconds: float,
) -> list[CalibrationDoc]:
    """h2load then loadgen, per variant, on the baseline at ``rate``."""
    out = []
    for variant in variants:
        out.append(_h2load(bed, variant, rate, warmup, seconds))
        out.append(_loadgen(executor, variant, rate, warmup, seconds))
    return out
