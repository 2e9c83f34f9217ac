"""Benchmark: two meshed proxy processes talking mTLS on loopback; per-process memory and CPU.

    python -m hybridmesh.proxy._bench_tls [--conns 16[,64]] [--duration 3] [--rate 1000]
        [--rate-duration 5] [--no-malloc-env] [--trace] [--plaintext]

The ``http-throughput`` and ``http-latency`` scenarios of ``hybridmesh bench`` without a lab
(no root): a client-side and a server-side worker, each its own ``python -OO`` process
(``_bench_tls_child``) as in the lab, the fake control plane as CA, ``httpsvc`` answering
1 KiB. For every ``--conns`` level ``wrk -t1 -cN`` runs after a warm-up, with each proxy's
peak-RSS window reset first (``clear_refs``, as the bench does), then reports per process:
``VmHWM`` (peak RSS of the run), RSS/PSS after it (``smaps_rollup``) and CPU per request.
``--rate`` adds an open-loop ``loadgen`` run (p50/p99, direct vs proxied). The children report
GC pauses per generation per phase, live TLS objects and, with ``--trace``, tracemalloc growth.

``--malloc-env`` runs the proxies with glibc's mmap/trim thresholds above uvloop's 256 KiB
TLS read (the fix used before ``_tlsread``; ``--copy-reads`` with it is that set-up);
``--plaintext`` gives the proxies no identity (the sidecar-plaintext contender).
Figures move with the neighbours on a shared machine: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hybridmesh.proxy._bench_loop import _free_port, loadgen, memory_kib, wrk
from hybridmesh.proxy.testing import FakeControlPlane, endpoint, pod_snapshot, service

__all__ = ["main", "peak_kib", "rss_by_mapping"]

_CLIENT, _SERVER, _APP = "127.0.0.1", "127.0.0.2", "127.0.0.3"
_VIP = ("10.96.0.10", 80)
_TICK = os.sysconf("SC_CLK_TCK")


_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), "MALLOC_TRIM_THRESHOLD_": str(4 << 20)}

def peak_kib(pid: int) -> int:
    """``VmHWM``: the process's peak RSS since start or the last ``clear_refs`` 5."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def rss_by_mapping(pid: int, top: int = 12) -> dict[str, int]:
    """RSS (KiB) per mapped file (``[heap]``, ``[anon]``, libraries): where a process's
    resident memory is, the largest ``top`` first."""
    totals: dict[str, int] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else "[anon]"
        elif head and head[0] == "Rss:":
            totals[name] = totals.get(name, 0) + int(head[1])
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    return {name.rsplit("/", 1)[-1]: kib for name, kib in ranked[:top]}


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


class _Proxy:
    """One child proxy process: start, mark phases, stop and read its report."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], report: Path) -> None:
        self.name, self.report = name, report
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("ready"):
            self.proc.kill()
            raise RuntimeError(f"proxy {name} did not start: {line!r}")
        self.outbound, self.inbound = (int(x) for x in line.split()[1:3])
        self.cpu0 = 0

    def mark(self) -> None:
        """New measured window: peak RSS reset, GC stats dumped and reset (SIGUSR2)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        self.proc.send_signal(signal.SIGUSR2)
        self.cpu0 = _cpu_ticks(self.proc.pid)

    def window(self, requests: int) -> dict[str, Any]:
        mem = memory_kib(self.proc.pid)
        cpu = (_cpu_ticks(self.proc.pid) - self.cpu0) / _TICK
        return {"peak_rss_kib": peak_kib(self.proc.pid), "rss_kib": mem["rss"],
                "pss_kib": mem["pss"], "cpu_us_per_request": round(cpu / requests * 1e6, 1)}

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return json.loads(self.report.read_text()) if self.report.exists() else {}


def _publish(cp: FakeControlPlane, tmp: Path, app_port: int, inbound: int,
             *, plaintext: bool) -> None:
    web = service("web", _VIP[0], [(_VIP[1], inbound, "http")],
                  [endpoint("web-0", _SERVER, service_account="web")])
    mode = "PERMISSIVE" if plaintext else "STRICT"
    cp.set("default/client-0", pod_snapshot("client-0", _CLIENT, [web], mtls_mode=mode,
                                            service_account="client"))
    cp.set("default/web-0", pod_snapshot("web-0", _SERVER, [web], mtls_mode=mode,
                                         service_account="web"))
    for pod in ("client-0", "web-0"):
        (tmp / f"{pod}.token").write_text(cp.issue_token(f"default/{pod}"))


def _proxy(args: argparse.Namespace, tmp: Path, pod: str, bind: str, dst: str,
           *, inbound: int = 0) -> _Proxy:
    argv = [sys.executable, "-OO", "-m", "hybridmesh.proxy._bench_tls_child",
            "--pod", f"default/{pod}", "--control", str(tmp / "cp.sock"),
            "--bind", bind, "--inbound-port", str(inbound), "--dst", dst,
            "--report", str(tmp / f"{pod}.json")]
    argv += [] if args.plaintext else ["--token", str(tmp / f"{pod}.token")]
    argv += ["--trace"] if args.trace else []
    argv += ["--copy-reads"] if args.copy_reads else []
    argv += ["--no-gc-freeze"] if args.no_gc_freeze else []
    argv += ["--profile", f"{args.profile}.{pod}"] if args.profile else []
    env = {k: v for k, v in os.environ.items() if k not in _MALLOC_ENV}
    env.update(_MALLOC_ENV if args.malloc_env else {})
    if args.trim_threshold is not None:
        env["MALLOC_TRIM_THRESHOLD_"] = str(args.trim_threshold)
    return _Proxy(pod, argv, env, tmp / f"{pod}.json")


def _wait_port(host: str, port: int) -> None:
    import socket

    for _ in range(250):
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{host}:{port} did not start")


def _levels(args: argparse.Namespace, url: str, proxies: list[_Proxy]) -> list[dict[str, Any]]:
    out = []
    for conns in args.conns:
        wrk(url, 1, conns)  # warm-up: pools, caches
        for p in proxies:
            p.mark()
        got = wrk(url, args.duration, conns)
        n = max(int(got["requests"]), 1)
        out.append({"conns": conns, "wrk": got, **{p.name: p.window(n) for p in proxies}})
        if args.smaps:
            out[-1]["mappings"] = {p.name: rss_by_mapping(p.proc.pid) for p in proxies}
    return out


def _run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    app_port, inbound = _free_port(_APP), _free_port(_SERVER)
    app = subprocess.Popen([sys.executable, "-m", "hybridmesh.lab.workloads.httpsvc",
                            "--host", _APP, "--port", str(app_port)], stdout=subprocess.DEVNULL)
    cp = FakeControlPlane(tmp / "cp.sock")
    cp.enable_identity()
    cp.start_in_thread()
    proxies: list[_Proxy] = []
    report: dict[str, Any] = {"malloc_env": args.malloc_env, "mtls": not args.plaintext,
                              "trim_threshold": args.trim_threshold,
                              "gc_freeze": not args.no_gc_freeze,
                              "tlsread": not args.copy_reads}
    try:
        _wait_port(_APP, app_port)
        _publish(cp, tmp, app_port, inbound, plaintext=args.plaintext)
        proxies.append(_proxy(args, tmp, "web-0", _SERVER, f"{_APP}:{app_port}", inbound=inbound))
        proxies.append(_proxy(args, tmp, "client-0", _CLIENT, f"{_VIP[0]}:{_VIP[1]}"))
        url, direct = f"http://{_CLIENT}:{proxies[1].outbound}/", f"http://{_APP}:{app_port}/"
        report["idle_rss_kib"] = {p.name: memory_kib(p.proc.pid)["rss"] for p in proxies}
        if args.smaps:
            report["idle_mappings"] = {p.name: rss_by_mapping(p.proc.pid) for p in proxies}
        report["direct"] = wrk(direct, args.duration, args.conns[0])
        report["levels"] = _levels(args, url, proxies)
        if args.rate:
            for p in proxies:
                p.mark()
            report["open_loop"] = {"direct": loadgen(direct, args.rate, args.rate_duration),
                                   "proxied": loadgen(url, args.rate, args.rate_duration)}
    finally:
        report["children"] = {p.name: p.stop() for p in proxies}
        cp.stop_thread()
        app.terminate()
        app.wait(5)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hybridmesh.proxy._bench_tls")
    p.add_argument("--conns", type=lambda s: [int(x) for x in s.split(",")], default=[16],
                   help="wrk connection levels, comma-separated (RSS per added connection)")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--rate", type=float, default=0.0, help="then open loop at this req/s")
    p.add_argument("--rate-duration", type=float, default=5.0)
    p.add_argument("--malloc-env", action="store_true",
                   help="proxies with glibc mmap/trim thresholds above 256 KiB")
    p.add_argument("--trim-threshold", type=int, default=None, metavar="BYTES",
                   help="A/B: MALLOC_TRIM_THRESHOLD_ for the proxies")
    p.add_argument("--plaintext", action="store_true", help="proxies without an identity")
    p.add_argument("--profile", metavar="PREFIX",
                   help="cProfile each proxy's measured phases into PREFIX.<pod>")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="A/B: proxies without server.settle_gc (no gc.freeze)")
    p.add_argument("--copy-reads", action="store_true",
                   help="A/B: TLS reads through uvloop's 256 KiB copy (no _tlsread adapter)")
    p.add_argument("--smaps", action="store_true", help="RSS per mapping, idle and loaded")
    p.add_argument("--trace", action="store_true", help="tracemalloc growth per phase")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hm-bench-tls-") as tmp:
        report = _run(args, Path(tmp))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
