"""One measured run per call: start the load tool in the client pod, read everything around it.

Every run brackets its measured window with two snapshots of the same counters (the load
tool's own statistics, the pods' cgroup CPU, eBPF run time, the proxies' request counters),
so warm-up and process start are outside the window wherever the tool allows it:

* ``http-latency``: loadgen runs open-loop until stopped; its cumulative ``/_hm/stats``
  histogram is read after the warm-up and again after the window, and subtracted.
* ``http-throughput``: a warm-up wrk run, then the measured wrk run.
* ``tcp-rr`` / ``tcp-stream``: tcpperf warms up itself; the snapshots bracket the process
  (its interpreter start is in the load generator's CPU, a few tens of ms).
* ``grpc``: h2load with its own warm-up; its log holds the measured requests only.
* ``scale``, ``blast-radius``, ``upgrade`` involve more than one client/server pair: they
  have executors of their own (scale.py, disrupt.py) that this one hands them to.

A contender with a proxy must show that the proxy carried the traffic: its own request (or
connection) counters must have moved by the run's operations (probes.py), and every proxy
must have used CPU. A run where capture silently failed would otherwise be reported as a proxy with
zero overhead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hybridmesh.bench.accounting import Accountant, Usage, usage_metrics
from hybridmesh.bench.bed import BedError, TestBed, stop_process
from hybridmesh.bench.envoy_sidecar import EnvoyError
from hybridmesh.bench.model import SampleDoc
from hybridmesh.bench.probes import envoy_counts, proxy_checks, sidecar_counts
from hybridmesh.bench.scenarios import CONTENDERS
from hybridmesh.bench.schedule import Run
from hybridmesh.bench.tools import (
    ToolOutputError,
    grpc_frame,
    grpc_h2load_argv,
    last_json,
    loadgen_argv,
    parse_h2load_log,
    parse_h2load_summary,
    parse_wrk,
    tcpperf_argv,
    wrk_argv,
)
from hybridmesh.bench.topology import (
    GRPC_PORT,
    HTTP_SERVICE_PORT,
    RR_PORT,
    STREAM_PORT,
    PodRole,
    client_pod,
    namespace_of,
    server_pod,
)
from hybridmesh.lab._sh import LabError
from hybridmesh.lab.workloads._stats import EdgeStats, StatsMismatch

__all__ = ["LOADGEN_STATS_PORT", "Executor", "RunError", "Special"]

LOADGEN_STATS_PORT = 19090
SIDECAR_ADMIN_PORT = 15020
HTTP_TARGET = "http://http/" if HTTP_SERVICE_PORT == 80 else f"http://http:{HTTP_SERVICE_PORT}/"
MIN_PROXY_SHARE = 0.95
_BY_NAMESPACE = {namespace_of(c.name): c for c in CONTENDERS.values()}
GRPC_URL = f"http://grpc:{GRPC_PORT}/hybridmesh.lab.Echo/Unary"
GRPC_CLIENTS = 4
GRPC_MESSAGE = 64


class RunError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class _Window:
    """What was read at one edge of the measured window."""

    usage: Usage
    counters: dict[str, dict[str, int]]  # side -> {"http", "tcp"} its proxy reported


_Result = tuple[dict[str, float], dict[str, float], dict[str, Any] | None, float]
"""metrics, checks, latency histogram (or None), measured seconds"""


class Special(Protocol):
    """An executor for a scenario that is not one client/server pair (scale, disruption)."""

    def measure(self, run: Run) -> SampleDoc: ...


class Executor:
    """Measures runs on a test bed."""

    def __init__(
        self,
        bed: TestBed,
        loadgen_concurrency: int = 64,
        special: Mapping[str, Special] | None = None,
    ) -> None:
        self.bed = bed
        self.loadgen_concurrency = loadgen_concurrency
        self.special = dict(special or {})  # scenario -> its own executor
        self.last_loadgen_output = ""  # the last loadgen's log (its JSON summary at the end)

    def measure(self, run: Run) -> SampleDoc:
        scenario = run.cell.scenario
        if scenario in self.special:
            return self._special(run)
        client = client_pod(run.contender, run.cell.variant)
        server = server_pod(run.contender, scenario)
        contender = CONTENDERS.get(run.contender)
        acct = Accountant(
            self.bed.layout,
            (client.namespace, client.name),
            (server.namespace, server.name),
            node_proxies=contender is not None and contender.proxy == "node",
        )
        started = time.time()
        try:
            metrics, checks, histogram, wall = self._dispatch(run, client, server, acct)
        except (OSError, LabError, BedError, EnvoyError, ToolOutputError, StatsMismatch) as exc:
            raise RunError(
                f"{run.cell.label()} [{run.contender}] failed: {getattr(exc, 'message', exc)}",
                "did something take the lab down meanwhile (`hybridmesh lab down`, a test's "
                "sweep)? The samples so far are in results.json",
            ) from None
        self._verify(run, metrics, checks)
        return SampleDoc(
            scenario=scenario,
            variant=run.cell.variant,
            level=run.cell.level,
            contender=run.contender,
            repeat=run.repeat,
            order=run.order,
            started_at=started,
            wall_s=round(wall, 4),
            metrics=metrics,
            checks=checks,
            histogram=histogram,
        )

    def _special(self, run: Run) -> SampleDoc:
        try:
            return self.special[run.cell.scenario].measure(run)
        except (OSError, LabError, BedError, EnvoyError, ToolOutputError, StatsMismatch) as exc:
            raise RunError(
                f"{run.cell.label()} [{run.contender}] failed: {getattr(exc, 'message', exc)}"
            ) from None

    def _dispatch(self, run: Run, client: PodRole, server: PodRole, acct: Accountant) -> _Result:
        scenario = run.cell.scenario
        if scenario == "http-latency":
            return self._http_latency(run, client, server, acct)
        if scenario == "http-throughput":
            return self._http_throughput(run, client, server, acct)
        if scenario in ("tcp-rr", "tcp-stream"):
            return self._tcp(run, client, server, acct)
        if scenario == "grpc":
            return self._grpc(run, client, server, acct)
        raise RunError(f"scenario {scenario!r} has no executor")

    # -- windows -------------------------------------------------------------------------
    def _edge(self, client: PodRole, server: PodRole, acct: Accountant) -> _Window:
        counters: dict[str, dict[str, int]] = {}
        for side, role in (("client", client), ("server", server)):
            reading = self._proxy_counts(role, side)
            if reading is not None:
                counters[side] = reading
        return _Window(acct.snapshot(), counters)

    def _proxy_counts(self, role: PodRole, side: str) -> dict[str, int] | None:
        envoy = self.bed.envoy(role)
        if envoy is not None:
            return envoy_counts(envoy.counters(), side)
        contender = _BY_NAMESPACE.get(role.namespace)
        if contender is not None and contender.proxy == "hybridmesh":
            try:  # hybridmesh's proxy: its /metrics, if it serves them yet
                text = self.bed.http_text(role, SIDECAR_ADMIN_PORT, "/metrics")
                return sidecar_counts(text, side)
            except (OSError, BedError, ValueError):
                return None
        return None

    def _prepare(self, client: PodRole, server: PodRole, acct: Accountant) -> None:
        """Just before a window opens: capture first in line again, peak RSS reset."""
        for role in (client, server):
            envoy = self.bed.envoy(role)
            if envoy is not None:
                envoy.ensure_capture()  # the lab may have put its service rules first again
        acct.reset_peaks()

    def _open(self, client: PodRole, server: PodRole, acct: Accountant) -> _Window:
        self._prepare(client, server, acct)
        return self._edge(client, server, acct)

    # -- scenarios -----------------------------------------------------------------------
    def _http_latency(
        self, run: Run, client: PodRole, server: PodRole, acct: Accountant
    ) -> _Result:
        rate = int(run.cell.level or 0)
        argv = loadgen_argv(HTTP_TARGET, rate, self.loadgen_concurrency, LOADGEN_STATS_PORT)
        proc, log = self.bed.spawn(client, argv, f"loadgen-{run.contender}-{rate}")
        try:
            self._wait_stats(client, proc)
            time.sleep(run.warmup_s)
            self._prepare(client, server, acct)
            first, t_first = self._loadgen_edge(client)
            begin = self._edge(client, server, acct)
            time.sleep(run.duration_s)
            last, t_last = self._loadgen_edge(client)
            end, peaks = self._edge(client, server, acct), acct.peaks()
        finally:
            stop_process(proc)
        self.last_loadgen_output = log.read_text(errors="replace")
        summary = last_json(self.last_loadgen_output)
        edge = last.minus(first)
        wall = t_last - t_first  # between the two reads of loadgen's own counters
        hist = edge.latency.summary_ms()
        metrics = {
            "rps": round(edge.requests / wall, 2),
            "errors": float(edge.errors),
            "p50_ms": hist["p50"],
            "p90_ms": hist["p90"],
            "p99_ms": hist["p99"],
            "p999_ms": hist["p999"],
            "mean_ms": hist["mean"],
            "send_lag_p99_ms": float(summary.get("send_lag_p99_ms", 0.0)),
            **usage_metrics(begin.usage, end.usage, edge.requests, peaks),
        }
        checks = proxy_checks(begin.counters, end.counters, http=True, ops=edge.requests)
        return metrics, checks, edge.latency.to_json(), wall

    def _wait_stats(self, client: PodRole, proc: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RunError(f"loadgen in {client.key} exited with {proc.returncode}")
            try:
                self.bed.http_get(client, LOADGEN_STATS_PORT, "/_hm/stats")
                return
            except (OSError, BedError, ValueError):
                time.sleep(0.05)
        raise RunError(f"loadgen in {client.key} did not serve its stats in {timeout:.0f}s")

    def _loadgen_edge(self, client: PodRole) -> tuple[EdgeStats, float]:
        """loadgen's cumulative counters and when they were read (monotonic)."""
        doc = self.bed.http_get(client, LOADGEN_STATS_PORT, "/_hm/stats")
        at = time.monotonic()
        edges = list(doc.get("edges", {}).values())
        return (EdgeStats.from_json(edges[0]) if edges else EdgeStats()), at

    def _http_throughput(
        self, run: Run, client: PodRole, server: PodRole, acct: Accountant
    ) -> _Result:
        conns = int(run.cell.level or 1)
        timeout = run.duration_s + run.warmup_s + 30
        if run.warmup_s > 0:
            self.bed.run_tool(
                client, wrk_argv(HTTP_TARGET, conns, run.warmup_s), "wrk-warmup", timeout
            )
        begin = self._open(client, server, acct)
        done = self.bed.run_tool(
            client, wrk_argv(HTTP_TARGET, conns, run.duration_s), "wrk", timeout
        )
        end, peaks = self._edge(client, server, acct), acct.peaks()
        try:
            wrk = parse_wrk(done.output)
        except ToolOutputError as exc:
            raise RunError(f"wrk in {client.key} failed: {exc}") from None
        metrics = {
            "rps": wrk.rps,
            "errors": float(wrk.errors),
            "p50_ms": wrk.p50_ms,
            "p99_ms": wrk.p99_ms,
            **usage_metrics(begin.usage, end.usage, wrk.requests, peaks),
        }
        checks = proxy_checks(begin.counters, end.counters, http=True, ops=wrk.requests)
        return metrics, checks, None, wrk.seconds

    def _tcp(self, run: Run, client: PodRole, server: PodRole, acct: Accountant) -> _Result:
        rr = run.cell.scenario == "tcp-rr"
        mode, port = ("rr", RR_PORT) if rr else ("stream", STREAM_PORT)
        argv = tcpperf_argv(mode, "tcp", port, run.warmup_s, run.duration_s)
        begin = self._open(client, server, acct)
        timeout = 2 * (run.duration_s + run.warmup_s) + 30
        done = self.bed.run_tool(client, argv, f"tcpperf-{mode}-{run.contender}", timeout)
        end, peaks = self._edge(client, server, acct), acct.peaks()
        if done.returncode != 0:
            tail = " ".join(done.output[-400:].split())
            raise RunError(f"tcpperf {mode} in {client.key} failed: {tail}")
        out = last_json(done.output)
        if rr:
            ops = float(out["transactions"] + out["warmup_transactions"])
            metrics = {
                "tps": float(out["tps"]),
                "rtt_p50_us": float(out["rtt_p50_us"]),
                "rtt_p99_us": float(out["rtt_p99_us"]),
            }
            histogram = out.get("histogram")
        else:
            ops = (out["bytes"] + out["warmup_bytes"]) / (1 << 20)
            metrics = {"gbps": float(out["gbps"])}
            histogram = None
        metrics.update(usage_metrics(begin.usage, end.usage, ops, peaks))
        checks = proxy_checks(begin.counters, end.counters, http=False, ops=ops)
        return metrics, checks, histogram, float(out["seconds"])

    def _grpc(self, run: Run, client: PodRole, server: PodRole, acct: Accountant) -> _Result:
        streams = int(run.cell.level or 1)
        body = self.bed.workdir / "grpc-unary.bin"
        body.write_bytes(grpc_frame(b"x" * GRPC_MESSAGE))
        log = self.bed.workdir / "logs" / f"h2load-grpc-{run.contender}-{run.order}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = grpc_h2load_argv(
            GRPC_URL, GRPC_CLIENTS, streams, run.duration_s,
            log=str(log), body=str(body), warmup=run.warmup_s,
        )  # fmt: skip
        begin = self._open(client, server, acct)
        timeout = run.duration_s + run.warmup_s + 30
        done = self.bed.run_tool(client, argv, f"h2load-grpc-{run.contender}", timeout)
        end, peaks = self._edge(client, server, acct), acct.peaks()
        summary = parse_h2load_summary(done.output)
        if summary.protocol != "h2c" or summary.succeeded == 0:
            tail = " ".join(done.output[-300:].split())
            raise RunError(f"h2load (gRPC) in {client.key} got no h2c answers: {tail}")
        hist, _ = parse_h2load_log(log.read_text().splitlines())
        ms = hist.summary_ms()
        metrics = {
            "rps": summary.rps,
            "errors": float(summary.failed),
            "p50_ms": ms["p50"],
            "p90_ms": ms["p90"],
            "p99_ms": ms["p99"],
            "p999_ms": ms["p999"],
            **usage_metrics(begin.usage, end.usage, summary.requests, peaks),
        }
        checks = proxy_checks(begin.counters, end.counters, http=True, ops=summary.requests)
        return metrics, checks, hist.to_json(), summary.seconds

    # -- verification --------------------------------------------------------------------
    def _verify(self, run: Run, metrics: dict[str, float], checks: dict[str, float]) -> None:
        contender = CONTENDERS.get(run.contender)
        if contender is not None and contender.proxy == "node":
            if metrics.get("cpu_node_proxy_us_per_op", 0.0) <= 0.0:
                raise RunError(
                    f"{run.contender}: the node proxies used no CPU in {run.cell.label()}; "
                    "the traffic bypassed them",
                    "is the pods' steering to the node proxy in place? (hybridmesh node status)",
                )
            return
        if contender is None or contender.proxy not in ("hybridmesh", "envoy"):
            return  # no proxy: nothing that could have been bypassed
        for name, share in checks.items():
            if share < MIN_PROXY_SHARE:
                side = name.split("_")[1]
                raise RunError(
                    f"{run.contender}: the {side}-side proxy carried only {share:.0%} of the "
                    f"traffic in {run.cell.label()}: capture is not in effect",
                    "check the pod's nat OUTPUT/PREROUTING rules (iptables-save in its netns)",
                )
        for side in ("client", "server"):
            if metrics.get(f"cpu_proxy_{side}_us_per_op", 0.0) <= 0.0:
                raise RunError(
                    f"{run.contender}: the {side}-side proxy used no CPU in {run.cell.label()}; "
                    "the traffic bypassed it",
                    "is the proxy running in the pod's proxy cgroup leaf?",
                )
