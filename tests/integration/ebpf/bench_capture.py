"""``sidecar+ebpf`` vs ``sidecar``: the latency each capture adds at a fixed rate (root; ~1 min).

    .venv/bin/python tests/integration/ebpf/bench_capture.py [--rate 1000] [--duration 5]
        [--rounds 3] [--no-sockmap]

Two pods on one node (meshnet's netns pair, capnet's cgroups), one proxy per pod, started
once; the capture under them is switched between runs, alternating, so every variant meets
the same proxies, the same backend and the same machine noise:

- ``none``: no capture, the client dials the web pod directly (the baseline);
- ``sidecar``: iptables REDIRECT in both pods (lab/capture.py);
- ``ebpf``: the capture datapath (connect4/getsockopt/sk_lookup), no iptables;
- ``ebpf+sockmap``: the ``sidecar+ebpf`` placement as the lab runs it (plus the sockmap
  datapath's sk_msg redirect on the app↔proxy and proxy↔proxy hops).

The client is bench_proxy's open-loop loadgen in the client pod's app cgroup, to the web
service VIP (direct: the pod IP). Reported as JSON: per variant, every round's p50/p99 and the
median over rounds of the p50/p99 added over that round's ``none``; and the ebpf variants'
added p50 relative to ``sidecar``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "proxy"))
sys.path.insert(0, str(Path(__file__).parent))

from bench_proxy import loadgen
from capnet import NODE, CapNet
from meshnet import CLIENT_NS, SERVER_IPS, SERVER_NS, WEB_PORT, WEB_VIP, wait_port

from hybridmesh.agent.datapath import Datapath
from hybridmesh.agent.dp_sockmap import create as create_sockmap
from hybridmesh.lab.capture import apply_capture, remove_capture

VARIANTS = ("none", "sidecar", "ebpf", "ebpf+sockmap")


class Switch:
    """Puts one capture variant under the running proxies (and takes the others away)."""

    def __init__(self, net: CapNet) -> None:
        self.net = net
        self.sockmap: Datapath | None = None

    def __call__(self, variant: str) -> None:
        for ns in (CLIENT_NS, SERVER_NS):
            if variant == "sidecar":
                apply_capture(ns)
            else:
                remove_capture(ns)
        assert self.net.dp is not None
        if variant.startswith("ebpf"):
            self.net.program()
        else:
            self.net.dp.remove()
        if variant == "ebpf+sockmap":
            self.sockmap = self.sockmap or create_sockmap(NODE)
            self.sockmap.sync(self.net.state())
        elif self.sockmap is not None:
            self.sockmap.remove()
            self.sockmap = None
        time.sleep(0.3)

    def close(self) -> None:
        if self.sockmap is not None:
            self.sockmap.remove()


def run(net: CapNet, args: argparse.Namespace) -> dict[str, Any]:
    switch = Switch(net)
    variants = [v for v in VARIANTS if args.sockmap or v != "ebpf+sockmap"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    added: dict[str, list[tuple[float, float]]] = {v: [] for v in variants[1:]}
    client = lambda argv: net.in_pod(CLIENT_NS, argv)  # noqa: E731
    try:
        for rnd in range(args.rounds):
            order = variants if rnd % 2 == 0 else [variants[0], *reversed(variants[1:])]
            for variant in order:
                switch(variant)
                url = (f"http://{SERVER_IPS[0]}:{WEB_PORT}/" if variant == "none"
                       else f"http://{WEB_VIP}/")
                loadgen(url, args.rate, 1, client)  # warm pools and caches
                runs[variant].append(loadgen(url, args.rate, args.duration, client))
            base = runs["none"][-1]
            for variant in variants[1:]:
                got = runs[variant][-1]
                added[variant].append((got["p50_ms"] - base["p50_ms"],
                                       got["p99_ms"] - base["p99_ms"]))
    finally:
        switch.close()
    return _report(args, runs, added)


def _report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]],
            added: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    med = {v: (statistics.median(a[0] for a in xs), statistics.median(a[1] for a in xs))
           for v, xs in added.items()}
    sidecar_p50 = med["sidecar"][0]
    return {
        "rate": args.rate, "duration_s": args.duration, "rounds": args.rounds,
        "runs": {v: [{k: r[k] for k in ("achieved_rate", "errors", "p50_ms", "p99_ms")}
                     for r in rs] for v, rs in runs.items()},
        "added_ms": {v: {"p50": round(p50, 3), "p99": round(p99, 3),
                         "per_round_p50": [round(a[0], 3) for a in added[v]]}
                     for v, (p50, p99) in med.items()},
        "added_p50_vs_sidecar": {v: round(med[v][0] / sidecar_p50, 3) if sidecar_p50 > 0 else None
                                 for v in med if v != "sidecar"},
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=int, default=1000, help="open-loop req/s")
    p.add_argument("--duration", type=int, default=5, help="seconds per run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-sockmap", dest="sockmap", action="store_false",
                   help="leave out the ebpf+sockmap variant")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hm-ptest-") as tmp:
        net = CapNet(Path(tmp))
        try:
            net.up()
            net.python("web-0", SERVER_NS, "-m", "hybridmesh.lab.workloads.httpsvc",
                       "--host", SERVER_IPS[0], "--port", str(WEB_PORT), "--name", "web")
            wait_port(SERVER_NS, SERVER_IPS[0], WEB_PORT)
            net.publish(web_ips=[SERVER_IPS[0]])
            net.start_proxies()
            print(json.dumps(run(net, args), indent=1))
        finally:
            with contextlib.suppress(Exception):
                remove_capture(CLIENT_NS)
            net.down()


if __name__ == "__main__":
    main()
