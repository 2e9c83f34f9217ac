"""wrk through client proxy + server proxy vs direct, on the meshnet setup (root; ~30 s).

    .venv/bin/python tests/integration/proxy/bench_proxy.py [--workers N] [--duration 5]

Prints req/s, p50/p99 latency (wrk --latency), each proxy's RSS and CPU time per request.
The backend is one httpsvc process (1 KiB answers); the service has that one endpoint, so
direct and proxied runs hit the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from meshnet import CLIENT_NS, SERVER_IPS, WEB_PORT, WEB_VIP, MeshNet

from hybridmesh.lab import _sh

_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, duration: int, conns: int) -> dict[str, float]:
    argv = _sh.in_netns(CLIENT_NS, ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
                                    url])
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         timeout=duration + 30).stdout
    if os.environ.get("HM_BENCH_RAW"):
        print(out, file=sys.stderr)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {f"p{m.group(1)}_ms": float(m.group(2)) * _UNIT[m.group(3)] for m in _LAT.finditer(out)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, **lat, "requests": total,
            "non_2xx": int(errors.group(1)) if errors else 0}


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


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--upgrade-h2", action="store_true",
                   help="proxies talk HTTP/2 to each other (the client proxy upgrades)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hm-ptest-") as tmp:
        net = MeshNet(Path(tmp))
        try:
            net.up()
            net.python("web-0", "hm-ptest-server", "-m", "hybridmesh.lab.workloads.httpsvc",
                       "--host", SERVER_IPS[0], "--port", str(WEB_PORT), "--name", "web")
            from meshnet import wait_port

            wait_port("hm-ptest-server", SERVER_IPS[0], WEB_PORT)
            net.publish(web_ips=[SERVER_IPS[0]])
            direct = wrk(f"http://{SERVER_IPS[0]}:{WEB_PORT}/", args.duration, args.conns)
            net.capture(True)
            net.start_proxies("--workers", str(args.workers),
                              *(["--upgrade-h2"] if args.upgrade_h2 else []))
            wrk(f"http://{WEB_VIP}/", 1, args.conns)  # warm up pools and caches
            pids = {n: children(net.procs[n].pid) for n in ("proxy-client", "proxy-server")}
            cpu0 = {n: cpu_s(p) for n, p in pids.items()}
            sys0 = {n: cpu_s(p, (12,)) for n, p in pids.items()}
            t0 = time.monotonic()
            proxied = wrk(f"http://{WEB_VIP}/", args.duration, args.conns)
            wall = time.monotonic() - t0
            report = {
                "direct": direct,
                "proxied": proxied,
                "workers": args.workers,
                "upgrade_h2": args.upgrade_h2,
                "proxies": {
                    n: {"rss_mb": round(rss_mb(p), 1),
                        "cpu_us_per_request": round(
                            (cpu_s(p) - cpu0[n]) / proxied["requests"] * 1e6, 1),
                        "system_us_per_request": round(
                            (cpu_s(p, (12,)) - sys0[n]) / proxied["requests"] * 1e6, 1),
                        "cpu_cores": round((cpu_s(p) - cpu0[n]) / wall, 2)}
                    for n, p in pids.items()
                },
            }
            print(json.dumps(report, indent=1))
        finally:
            net.down()


if __name__ == "__main__":
    main()
