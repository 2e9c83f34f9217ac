"""Same-node pod→pod TCP with and without the sockmap programs (run by hand, as root, sandboxed):

    tools/sandbox sockmap .venv/bin/python tests/integration/ebpf/bench_sockmap.py \\
        [--rounds 3] [--duration 3] [--size 64] [--loopback] [-o json]

Two pods (netns + veth on one bridge + cgroup v2) as in the live tests. The server is
``hybridmesh.bench.tcpperf serve`` in pod 1; the clients are ``tcpperf rr`` (one connection,
one ``--size``-byte transaction in flight) and ``tcpperf stream`` (64 KiB writes) in pod 0.
Modes alternate in one run, A B A B ...: ``none`` (programs loaded, not attached) and
``sockmap`` (sockops attached to both pods' cgroups, both addresses local). ``--loopback``
puts the server in pod 0 as well and dials 127.0.0.1: the app↔sidecar hop of ``sidecar+ebpf``.

CPU per transaction: user and system time of client + server (``wait4`` of the client,
``/proc/<pid>/stat`` of the server) next to the kernel's accounting of the two eBPF programs
(``run_time_ns`` with BPF_ENABLE_STATS on for the whole run). System time includes the TCP/IP
stack the sockmap path skips, and the eBPF time itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from conftest import cgroup2_root
from sockmap_env import Pod, bridged_pods

from hybridmesh.ebpf import _libbpf, bpffs
from hybridmesh.ebpf.build import build
from hybridmesh.ebpf.sockmap import SockMap

RR_PORT, STREAM_PORT = 5001, 5002
TICK = os.sysconf("SC_CLK_TCK")
MODES = ("none", "sockmap")


@dataclass
class Sample:
    mode: str
    kind: str  # "rr" | "stream"
    result: dict[str, Any]
    user_s: float
    sys_s: float
    bpf_ns: int
    bpf_runs: int


@dataclass
class Bench:
    pods: list[Pod]
    sm: SockMap
    server_pid: int
    host: str
    samples: list[Sample] = field(default_factory=list)


def _in_pod(pod: Pod, argv: list[str]) -> list[str]:
    join = f'echo $$ > "{pod.cgroup}/cgroup.procs" && exec "$@"'
    return ["sh", "-c", join, "sh", "ip", "netns", "exec", pod.name, *argv]


def _proc_cpu(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime


def _bpf(sm: SockMap) -> tuple[int, int]:
    stats = sm.program_stats().values()
    return sum(s.run_time_ns for s in stats), sum(s.run_cnt for s in stats)


def _set_mode(b: Bench, mode: str) -> None:
    if mode == "sockmap":
        for pod in b.pods:
            b.sm.attach(pod.cgroup)
    else:
        b.sm.detach()


def _client(b: Bench, kind: str, args: argparse.Namespace) -> tuple[dict[str, Any], float, float]:
    argv = [sys.executable, "-m", "hybridmesh.bench.tcpperf", kind, "--host", b.host,
            "--port", str(RR_PORT if kind == "rr" else STREAM_PORT),
            "--warmup", str(args.warmup), "--duration", str(args.duration)]  # fmt: skip
    if kind == "rr":
        argv += ["--size", str(args.size)]
    proc = subprocess.Popen(_in_pod(b.pods[0], argv), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"tcpperf {kind} failed (exit {proc.returncode})")
    return json.loads(out), usage.ru_utime, usage.ru_stime


def _run_one(b: Bench, mode: str, kind: str, args: argparse.Namespace) -> Sample:
    _set_mode(b, mode)
    su0, ss0 = _proc_cpu(b.server_pid)
    ns0, runs0 = _bpf(b.sm)
    result, cu, cs = _client(b, kind, args)
    su1, ss1 = _proc_cpu(b.server_pid)
    ns1, runs1 = _bpf(b.sm)
    return Sample(mode, kind, result, cu + su1 - su0, cs + ss1 - ss0, ns1 - ns0, runs1 - runs0)


def _metrics(s: Sample) -> dict[str, float]:
    """The figures of one sample; CPU per transaction (rr) or per MiB (stream)."""
    r = s.result
    if s.kind == "rr":
        n = r["transactions"] + r["warmup_transactions"]
        return {"tps": r["tps"], "p50_us": r["rtt_p50_us"], "p99_us": r["rtt_p99_us"],
                "user_us_per_tx": s.user_s * 1e6 / n, "sys_us_per_tx": s.sys_s * 1e6 / n,
                "bpf_ns_per_tx": s.bpf_ns / n, "bpf_runs_per_tx": s.bpf_runs / n}  # fmt: skip
    mib = (r["bytes"] + r["warmup_bytes"]) / (1 << 20)
    return {"mib_s": r["bytes"] / (1 << 20) / r["seconds"],
            "user_ms_per_mib": s.user_s * 1e3 / mib, "sys_ms_per_mib": s.sys_s * 1e3 / mib,
            "bpf_us_per_mib": s.bpf_ns / 1e3 / mib}  # fmt: skip


def summarize(samples: list[Sample]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """kind -> metric -> mode -> {median, min, max}."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for s in samples:
        for name, value in _metrics(s).items():
            values.setdefault((s.kind, name, s.mode), []).append(value)
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (kind, name, mode), vs in values.items():
        cell = {"median": statistics.median(vs), "min": min(vs), "max": max(vs)}
        out.setdefault(kind, {}).setdefault(name, {})[mode] = cell
    return out


def _print(summary: dict[str, Any], args: argparse.Namespace) -> None:
    where = "loopback in one pod (app<->sidecar)" if args.loopback else "same-node pod->pod"
    print(f"{where}, {args.rounds} rounds A/B alternating, {args.duration}s each, "
          f"rr size {args.size} B; median (min-max)")  # fmt: skip
    for kind, metrics in summary.items():
        print(f"\n{kind}:")
        for name, modes in metrics.items():
            cells = [f"{m:>8} {c['median']:10.2f} ({c['min']:.2f}-{c['max']:.2f})"
                     for m, c in modes.items()]  # fmt: skip
            base, fast = modes.get("none", {}), modes.get("sockmap", {})
            ratio = fast["median"] / base["median"] if base.get("median") else float("nan")
            print(f"  {name:16} " + "   ".join(cells) + f"   sockmap/none {ratio:.3f}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    build()
    tag = f"hm-bench-{os.getpid()}"
    pin_dir, shared = bpffs.pin_dir(f"{tag}-sm"), bpffs.pin_dir(f"{tag}-shared")
    stats_fd = _libbpf.enable_run_stats()
    with bridged_pods(tag, cgroup2_root()) as pods:
        serve = [sys.executable, "-m", "hybridmesh.bench.tcpperf", "serve",
                 "--rr-port", str(RR_PORT), "--stream-port", str(STREAM_PORT)]  # fmt: skip
        server_pod = pods[0] if args.loopback else pods[1]
        host = "127.0.0.1" if args.loopback else server_pod.ip
        server = subprocess.Popen(_in_pod(server_pod, serve), stdout=subprocess.PIPE, text=True)
        sm = SockMap.load(pin_dir, shared)
        try:
            assert server.stdout is not None
            server.stdout.readline()  # "tcpperf serving ..."
            sm.set_local_ips(p.ip for p in pods)
            b = Bench(pods, sm, server.pid, host)
            for _ in range(args.rounds):
                for mode in MODES:
                    for kind in ("rr", "stream"):
                        b.samples.append(_run_one(b, mode, kind, args))
            counters = sm.counters().to_json()
        finally:
            server.terminate()
            server.wait(10)
            sm.close()
            SockMap.remove(pin_dir)
            bpffs.remove_pin_dir(shared)
            os.close(stats_fd)
    return {"summary": summarize(b.samples), "counters": counters,
            "samples": [s.__dict__ for s in b.samples]}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--loopback", action="store_true", help="server in the client's pod")
    p.add_argument("-o", dest="output", choices=("text", "json"), default="text")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench_sockmap: run as root, inside tools/sandbox", file=sys.stderr)
        return 2
    report = run(args)
    if args.output == "json":
        print(json.dumps(report, indent=1, default=str))
    else:
        _print(report["summary"], args)
        print(f"\nsockmap counters over the run: {report['counters']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
