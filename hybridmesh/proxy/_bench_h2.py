"""Benchmark: the proxy's HTTP/2 paths on loopback, CPU per request (no root).

    python -m hybridmesh.proxy._bench_h2 [--load grpc|http1] [--mesh [--upgrade]]
        [--duration 3] [--conns 4] [--streams 16] [--profile FILE.prof]

``--load grpc``: h2load sends gRPC unary calls (a 64-byte framed message, ``-c conns -m
streams``) to a grpcio ``grpcsvc`` app, the bench's ``grpc`` scenario. ``--load http1``: wrk
(``-c conns``) GETs 1 KiB answers from ``httpsvc``, the ``http-throughput`` scenario.

Without ``--mesh`` one worker's outbound listener forwards to the app (gRPC: h2 in, h2 out).
With ``--mesh`` a second worker is the app's sidecar and the two talk mTLS as meshed proxies
do: gRPC stays HTTP/2; HTTP/1.1 stays HTTP/1.1 unless ``--upgrade`` (the proxies'
``--upgrade-h2``, Linkerd's transparent upgrade: requests multiplexed on HTTP/2). Both
workers run in this process, on one event loop: the CPU figure is the pair's (``getrusage``
over the measured run, divided by the requests the load tool counted); ``busy`` and
``runnable_waiting`` are the shares of the run it computed and waited for a CPU (the rest:
idle, waiting on I/O).
The same load straight at the app is measured first, so req/s reads as a ratio against
``direct`` from the same run; absolute figures move with the neighbours on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hybridmesh._http import install_uvloop
from hybridmesh.proxy._bench_loop import _cpu_s, _free_port, _wait_port, wrk
from hybridmesh.proxy.config import ProxyConfig
from hybridmesh.proxy.testing import FakeControlPlane, endpoint, pod_snapshot, service
from hybridmesh.proxy.worker import Worker

__all__ = ["grpc_frame", "h2load", "main"]

_CLIENT, _SERVER, _APP = "127.0.0.1", "127.0.0.2", "127.0.0.3"
_VIP = ("10.96.0.10", 80)
_METHOD = "/hybridmesh.lab.Echo/Unary"


def grpc_frame(message: bytes) -> bytes:
    """One length-prefixed, uncompressed gRPC message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load(url: str, duration: float, conns: int, streams: int, body: Path) -> dict[str, float]:
    """gRPC unary calls with h2load for ``duration`` seconds: req/s, requests, failures."""
    argv = ["h2load", "-c", str(conns), "-m", str(streams), "-D", f"{int(duration * 1000)}ms",
            "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         timeout=duration + 30).stdout
    rps = re.search(r"^finished in \S+, ([\d.]+) req/s", out, re.M)
    got = re.search(r"^requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out, re.M)
    if rps is None or got is None:
        raise RuntimeError(f"cannot parse h2load output:\n{out}")
    return {"rps": float(rps.group(1)), "requests": int(got.group(1)),
            "failed": int(got.group(1)) - int(got.group(2))}


def _app(load: str, port: int) -> subprocess.Popen[bytes]:
    module = "grpcsvc" if load == "grpc" else "httpsvc"
    argv = [sys.executable, "-m", f"hybridmesh.lab.workloads.{module}"]
    argv += ["serve"] if load == "grpc" else []
    return subprocess.Popen([*argv, "--host", _APP, "--port", str(port)],
                            stdout=subprocess.DEVNULL)


def _config(tmp: Path, pod: str, **kw: Any) -> ProxyConfig:
    base = ProxyConfig(namespace="default", pod=pod, control_socket=str(tmp / "cp.sock"),
                       outbound_port=0, inbound_port=0, admin_port=0, mark=None,
                       token_file=str(tmp / f"{pod}.token"))
    return replace(base, **kw)


async def _workers(cp: FakeControlPlane, tmp: Path, load: str, app_port: int, *, mesh: bool,
                   upgrade: bool) -> list[Worker]:
    """The client's sidecar (and with ``mesh`` the app's), configured and ready."""
    protocol = "grpc" if load == "grpc" else "http"
    inbound = _free_port(_SERVER)
    target = (_SERVER, inbound) if mesh else (_APP, app_port)
    web = service("web", _VIP[0], [(_VIP[1], target[1], protocol)],
                  [endpoint("web-0", target[0], service_account="web",
                            placement="sidecar" if mesh else "none")])
    cp.set("default/client-0", pod_snapshot("client-0", _CLIENT, [web], mtls_mode="STRICT",
                                            service_account="client"))
    cp.set("default/web-0", pod_snapshot("web-0", _APP, [web], mtls_mode="STRICT",
                                         service_account="web"))
    (tmp / "client-0.token").write_text(cp.issue_token("default/client-0"))
    (tmp / "web-0.token").write_text(cp.issue_token("default/web-0"))
    workers = [Worker(_config(tmp, "client-0", bind_host=_CLIENT, upgrade_h2=upgrade),
                      original_dst=lambda _s, d: _VIP if d == "outbound" else None)]
    if mesh:
        workers.append(Worker(_config(tmp, "web-0", bind_host=_SERVER, inbound_port=inbound),
                              original_dst=lambda _s, d: (_APP, app_port)))
    for w in workers:
        await w.start()
        await w.wait_ready(5)
    if mesh:
        await _identities(workers)
    return workers


async def _identities(workers: list[Worker]) -> None:
    async with asyncio.timeout(10):
        for w in workers:
            while w.ctx.mtls is None or w.ctx.mtls.identity.material is None:
                await asyncio.sleep(0.01)


async def _measure(args: argparse.Namespace, url: str, body: Path) -> dict[str, float]:
    if args.load == "grpc":
        return await asyncio.to_thread(h2load, url + _METHOD, args.duration, args.conns,
                                       args.streams, body)
    return await asyncio.to_thread(wrk, url + "/", args.duration, args.conns)


def _runqueue_s() -> float:
    """Seconds this process's threads waited for a CPU while runnable (schedstat): with
    ``busy`` it tells a proxy starved by neighbours from one idle while it waits on I/O."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


async def _run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = _free_port(_APP)
    app = _app(args.load, port)
    body = tmp / "grpc.bin"
    body.write_bytes(grpc_frame(b"x" * 64))
    cp = FakeControlPlane(tmp / "cp.sock")
    await cp.start()
    cp.enable_identity()
    workers: list[Worker] = []
    try:
        await _wait_port(_APP, port)
        direct = await _measure(args, f"http://{_APP}:{port}", body)
        workers = await _workers(cp, tmp, args.load, port, mesh=args.mesh,
                                 upgrade=args.upgrade)
        url = f"http://{_CLIENT}:{workers[0].outbound_port}"
        await _measure(replace_duration(args, 1.0), url, body)  # warm pools
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        cpu0, wall0, wait0 = _cpu_s(), time.monotonic(), _runqueue_s()
        if profiler is not None:
            profiler.enable()
        proxied = await _measure(args, url, body)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        cpu1, wall1, wait1 = _cpu_s(), time.monotonic(), _runqueue_s()
    finally:
        for w in workers:
            await w.close()
        await cp.close()
        app.terminate()
        app.wait(5)
    n = max(int(proxied["requests"]), 1)
    return {"load": args.load, "mesh": args.mesh, "upgrade": args.upgrade,
            "direct": direct, "proxied": proxied,
            "rps_ratio": round(proxied["rps"] / max(direct["rps"], 1.0), 3),
            "cpu_us_per_request": round((sum(cpu1) - sum(cpu0)) / n * 1e6, 1),
            "user_us_per_request": round((cpu1[0] - cpu0[0]) / n * 1e6, 1),
            "busy": round((sum(cpu1) - sum(cpu0)) / (wall1 - wall0), 2),
            "runnable_waiting": round((wait1 - wait0) / (wall1 - wall0), 2)}


def replace_duration(args: argparse.Namespace, seconds: float) -> argparse.Namespace:
    """``args`` with another duration (the warm-up run)."""
    return argparse.Namespace(**{**vars(args), "duration": seconds})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hybridmesh.proxy._bench_h2")
    p.add_argument("--load", choices=("grpc", "http1"), default="grpc")
    p.add_argument("--mesh", action="store_true", help="two meshed workers (mTLS)")
    p.add_argument("--upgrade", action="store_true",
                   help="with --mesh: HTTP/1.1 crosses the mTLS hop on HTTP/2 (--upgrade-h2)")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--profile", metavar="FILE", help="cProfile the measured run into FILE")
    args = p.parse_args(argv)
    install_uvloop()
    with tempfile.TemporaryDirectory(prefix="hm-bench-h2-") as tmp:
        report = asyncio.run(_run(args, Path(tmp)))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
