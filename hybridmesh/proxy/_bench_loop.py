"""Benchmark: one proxy worker on loopback under wrk, CPU per request and memory (no root).

    python -m hybridmesh.proxy._bench_loop [--direction outbound|inbound] [--duration 5]
        [--conns 32] [--profile FILE.prof] [--vary] [--floor | --envoy]

``--floor`` replaces the worker with the least a Python proxy can do per request: the opaque
TCP relay (no parsing, no routing, no metrics — a connection per client, bytes passed through),
on the same event loop, backend and load. Its CPU per request is the floor under any L7 design
built on asyncio/uvloop callbacks; the worker's figure minus it is what HTTP handling costs.

``--vary`` gives every request a unique ``x-request-id`` (a wrk Lua script), as traced
traffic has: no two request heads are byte-identical, so the readers' head memo (see
``protocols/_h1reader``) never recalls one and every head is parsed.

``--envoy`` puts Envoy (``--concurrency 1``: one worker thread, HTTP connection manager +
router to a static cluster, stats on, no access log; see ``_bench_envoy``) where the worker
stands, under the same load and backend; its CPU is the Envoy process's own utime/stime over
the measured run. That is issue #3's figure: req/s and CPU per request through ONE worker,
ours against Envoy's, from the same harness (``--direction`` does not change Envoy: its
inbound and outbound HTTP chains are the same HCM + router to a static cluster).

The worker runs in this process (its ``original_dst`` hook stands in for iptables), the
backend is one ``httpsvc`` process (1 KiB answers) on 127.0.0.2 and the load is ``wrk -t1``.
CPU is this process's own user/system time over the measured run (``getrusage``), divided by
the requests wrk completed: on a shared 2-core machine wall-clock req/s moves with the
neighbours, CPU per request much less. Memory is reported as RSS, PSS and USS from
``/proc/self/smaps_rollup``: RSS counts shared library pages (libpython, libcrypto) in full,
PSS divides them among the processes mapping them (the fair per-proxy cost), USS is what
this process alone holds. ``--profile`` runs cProfile over the measured run only.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import re
import resource
import socket
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from hybridmesh._aio import TaskSet
from hybridmesh._http import install_uvloop
from hybridmesh.proxy._bench_envoy import EnvoyProcess, envoy_bootstrap, proc_cpu_s
from hybridmesh.proxy.config import ProxyConfig
from hybridmesh.proxy.relay import Relay
from hybridmesh.proxy.testing import FakeControlPlane, endpoint, pod_snapshot, service
from hybridmesh.proxy.worker import Worker

__all__ = ["main", "memory_kib", "wrk"]

_BACKEND = "127.0.0.2"
_VIP = ("10.96.0.10", 80)
_ROLLUP = re.compile(r"^(Rss|Pss|Private_Clean|Private_Dirty):\s+(\d+) kB", re.M)


def memory_kib(pid: int | str = "self") -> dict[str, int]:
    """RSS, PSS and USS (private clean + dirty) of a process, in KiB."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    got = {name: int(value) for name, value in _ROLLUP.findall(text)}
    return {"rss": got["Rss"], "pss": got["Pss"],
            "uss": got["Private_Clean"] + got["Private_Dirty"]}


_VARY_LUA = """
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, {["X-Request-Id"] = tostring(n)})
end
"""


def wrk(url: str, duration: float, conns: int, *, netns: str | None = None,
        script: str | None = None) -> dict[str, float]:
    """Run ``wrk -t1`` (inside ``netns`` if given, with a Lua ``script`` file if given);
    req/s, p50/p99 (ms), request count."""
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{int(duration)}s", "--latency", url]
    if script is not None:
        argv[1:1] = ["-s", script]
    if netns is not None:
        from hybridmesh.lab import _sh

        argv = _sh.in_netns(netns, argv)
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         timeout=duration + 30).stdout
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    lat = {f"p{m.group(1)}_ms": float(m.group(2)) * unit[m.group(3)]
           for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rps is None or total is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return {"rps": float(rps.group(1)), **lat, "requests": int(total.group(1)),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def loadgen(url: str, rate: float, duration: float, *, netns: str | None = None
            ) -> dict[str, float]:
    """Open-loop ``loadgen --rate`` (coordinated omission handled): rate, p50/p90/p99/p99.9."""
    argv = [sys.executable, "-m", "hybridmesh.lab.workloads.loadgen", "--target", url,
            "--rate", str(rate), "--duration", str(duration), "--json"]
    if netns is not None:
        from hybridmesh.lab import _sh

        argv = _sh.in_netns(netns, argv)
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         timeout=duration + 60).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return {k: got[k] for k in ("achieved_rate", "requests", "errors", "p50_ms", "p90_ms",
                                "p99_ms", "p999_ms")}


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def _wait_port(host: str, port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection(host, port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.02)
    raise RuntimeError(f"backend {host}:{port} did not start")


def _cpu_s(pid: int | None = None) -> tuple[float, float]:
    """User/system CPU seconds of this process, or of ``pid`` (the Envoy under test)."""
    if pid is not None:
        return proc_cpu_s(pid)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


class _FloorRelay:
    """The ``--floor`` stand-in for a worker: accept, dial the backend, relay bytes."""

    def __init__(self, backend: tuple[str, int]) -> None:
        self.backend = backend
        self.server: asyncio.Server | None = None
        self.tasks = TaskSet()

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._accepted, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def _accepted(self) -> asyncio.Protocol:
        relay = Relay()
        this = self

        class Accept(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                relay.start_downstream(transport, b"")  # type: ignore[arg-type]
                this.tasks.spawn(this._dial(relay), name="floor-dial")

        return Accept()

    async def _dial(self, relay: Relay) -> None:
        await asyncio.get_running_loop().create_connection(lambda: relay.up, *self.backend)
        relay.upstream_connected()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        await self.tasks.cancel_all()


async def _measure(url: str, args: argparse.Namespace, pid: int | None) -> dict[str, Any]:
    """Warm up, then the measured wrk run: CPU of this process (or ``pid``) and memory."""
    idle = memory_kib(pid or "self")
    script = args.vary_script
    await asyncio.to_thread(wrk, url, 1, args.conns, script=script)  # warm pools and caches
    profiler = cProfile.Profile() if args.profile else None
    cpu0 = _cpu_s(pid)
    if profiler is not None:
        profiler.enable()
    result = await asyncio.to_thread(wrk, url, args.duration, args.conns, script=script)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    cpu1 = _cpu_s(pid)
    n = max(int(result["requests"]), 1)
    return {"wrk": result,
            "user_us_per_request": round((cpu1[0] - cpu0[0]) / n * 1e6, 1),
            "system_us_per_request": round((cpu1[1] - cpu0[1]) / n * 1e6, 1),
            "memory_kib": {"idle": idle, "loaded": memory_kib(pid or "self")}}  # fmt: skip


async def _open_loop(url: str, direct_url: str, args: argparse.Namespace
                     ) -> dict[str, dict[str, float]]:
    direct = await asyncio.to_thread(loadgen, direct_url, args.rate, args.rate_duration)
    proxied = await asyncio.to_thread(loadgen, url, args.rate, args.rate_duration)
    return {"direct": direct, "proxied": proxied}


def _worker(args: argparse.Namespace, tmp: Path, port: int) -> tuple[Worker, FakeControlPlane]:
    """The worker under test and its fake control plane (one service, one endpoint)."""
    cp = FakeControlPlane(tmp / "cp.sock")
    inbound = args.direction == "inbound"
    pod_ip = _BACKEND if inbound else "127.0.0.1"
    web = service("web", _VIP[0], [(_VIP[1], port)], [endpoint("web-0", _BACKEND)])
    cp.set("default/bench-0", pod_snapshot("bench-0", pod_ip, [web]))
    config = ProxyConfig(namespace="default", pod="bench-0", control_socket=str(tmp / "cp.sock"),
                         outbound_port=0, inbound_port=0, admin_port=0, bind_host="127.0.0.1",
                         mark=None)
    dialled = (_BACKEND, port) if inbound else _VIP
    return Worker(config, original_dst=lambda _sock, _direction: dialled), cp


async def _subject(args: argparse.Namespace, tmp: Path, port: int, stack: AsyncExitStack
                   ) -> tuple[int, int | None]:
    """Start what stands between wrk and the backend; its listen port and (Envoy) PID."""
    if args.envoy:
        listen = _free_port("127.0.0.1")
        envoy = EnvoyProcess(envoy_bootstrap(("127.0.0.1", listen), (_BACKEND, port)), tmp)
        stack.callback(envoy.stop)
        pid = envoy.start()
        await _wait_port("127.0.0.1", listen)
        return listen, pid
    if args.floor:
        floor = _FloorRelay((_BACKEND, port))
        stack.push_async_callback(floor.close)
        return await floor.start(), None
    worker, cp = _worker(args, tmp, port)
    await cp.start()
    stack.push_async_callback(cp.close)
    stack.push_async_callback(worker.close)
    await worker.start()
    await worker.wait_ready(5)
    return (worker.inbound_port if args.direction == "inbound" else worker.outbound_port), None


async def _run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    args.vary_script = None
    if args.vary:
        args.vary_script = str(tmp / "hm-vary.lua")
        Path(args.vary_script).write_text(_VARY_LUA)
    port = _free_port(_BACKEND)
    backend = subprocess.Popen([sys.executable, "-m", "hybridmesh.lab.workloads.httpsvc",
                                "--host", _BACKEND, "--port", str(port)],
                               stdout=subprocess.DEVNULL)
    try:
        async with AsyncExitStack() as stack:
            await _wait_port(_BACKEND, port)
            listen, pid = await _subject(args, tmp, port, stack)
            url = f"http://127.0.0.1:{listen}/"
            measured = await _measure(url, args, pid)
            if args.rate:
                measured["open_loop"] = await _open_loop(url, f"http://{_BACKEND}:{port}/", args)
    finally:
        backend.terminate()
        backend.wait(5)
    what = ("envoy (--concurrency 1)" if args.envoy else
            "floor (opaque relay)" if args.floor else args.direction)
    note = ("memory of the Envoy process" if args.envoy else
            "memory of the bench process (worker + fake control plane + bench imports)")
    return {"direction": what, "vary": args.vary, **measured, "note": note}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hybridmesh.proxy._bench_loop")
    p.add_argument("--direction", choices=("outbound", "inbound"), default="outbound")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--profile", metavar="FILE", help="cProfile the measured run into FILE")
    p.add_argument("--rate", type=float, default=0.0,
                   help="then open-loop loadgen at this req/s, direct and proxied")
    p.add_argument("--rate-duration", type=float, default=10.0)
    p.add_argument("--vary", action="store_true",
                   help="a unique x-request-id per request (no two request heads alike)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--floor", action="store_true",
                       help="measure a bare opaque relay instead of the worker (the Python floor)")
    which.add_argument("--envoy", action="store_true",
                       help="measure Envoy --concurrency 1 instead of the worker (the peer)")
    args = p.parse_args(argv)
    install_uvloop()
    with tempfile.TemporaryDirectory(prefix="hm-bench-") as tmp:
        report = asyncio.run(_run(args, Path(tmp)))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
