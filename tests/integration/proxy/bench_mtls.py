"""mTLS cost: handshake CPU, and wrk through the proxy pair with mTLS vs plaintext (root; ~1 min).

    .venv/bin/python tests/integration/proxy/bench_mtls.py [--duration 8] [--conns 16]

1. Handshake: full TLS 1.3 mTLS handshakes between the proxy's client and server contexts in
   memory (MemoryBIO, no sockets), plus the post-handshake ``check_peer`` on both sides: CPU
   per handshake, what a new proxy-to-proxy connection costs.
2. Throughput: wrk from the client netns through client proxy → server proxy → httpsvc
   (1 KiB answers), the same bed (mtlsnet.py) with and without ``--token-file``; requests/s,
   p50/p99, proxies' CPU per request. Keep-alive wrk connections and pooled proxy-to-proxy
   connections: the steady state pays the record layer, not handshakes.
3. Open loop (``--rate``, default 1000 req/s for ``--rate-duration`` s): loadgen p50/p99
   through the same pair, plaintext vs mTLS (the added cost of mTLS at a fixed load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mtlsnet import CLIENT_NS, SERVER_IP, SERVER_NS, WEB_PORT, WEB_VIP, MtlsNet, wait_port

from hybridmesh.identity.ca import MeshCA
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.tls import check_peer, client_context, server_context
from hybridmesh.identity.workload import Svid, make_csr, new_key
from hybridmesh.lab import _sh

_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def handshake_cpu_ms(n: int = 300) -> tuple[float, float]:
    """(CPU ms per handshake without, with check_peer on both sides)."""
    ca = MeshCA.create_root("cluster.local")

    def svid(sa: str) -> Svid:
        key = new_key()
        ident = SpiffeId.for_workload("cluster.local", "default", sa)
        return Svid(ca.sign(make_csr(key, ident), ident, timedelta(hours=1)), key, ca.bundle)

    sctx, cctx = server_context(svid("web")), client_context(svid("client"))
    cctx.set_alpn_protocols(["http/1.1"])

    def one(verify: bool) -> None:
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = cctx.wrap_bio(c_in, c_out, server_side=False, server_hostname=None)
        server = sctx.wrap_bio(s_in, s_out, server_side=True)
        done = {"c": False, "s": False}
        while not all(done.values()):
            for name, obj, out, peer_in in (("c", client, c_out, s_in), ("s", server, s_out, c_in)):
                if not done[name]:
                    try:
                        obj.do_handshake()
                        done[name] = True
                    except ssl.SSLWantReadError:
                        pass
                data = out.read()
                if data:
                    peer_in.write(data)
        if verify:
            check_peer(client, None)
            check_peer(server, None)

    out = []
    for verify in (False, True):
        t0 = time.process_time()
        for _ in range(n):
            one(verify)
        out.append((time.process_time() - t0) / n * 1000)
    return out[0], out[1]


def wrk(duration: int, conns: int) -> dict[str, float]:
    argv = _sh.in_netns(CLIENT_NS, ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
                                    f"http://{WEB_VIP}/"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {f"p{m.group(1)}_ms": float(m.group(2)) * _UNIT[m.group(3)] for m in _LAT.finditer(out)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, **lat, "requests": total, "non_2xx": int(errors.group(1)) if errors
            else 0}


def loadgen(rate: int, duration: int) -> dict[str, float]:
    """Open loop through the pair (coordinated omission handled): p50/p99 in ms."""
    argv = _sh.in_netns(CLIENT_NS, [sys.executable, "-m", "hybridmesh.lab.workloads.loadgen",
                                    "--target", f"http://{WEB_VIP}/", "--rate", str(rate),
                                    "--duration", str(duration), "--json"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         timeout=duration + 60).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return {f"open_{k}": float(got[k]) for k in ("achieved_rate", "errors", "p50_ms", "p99_ms")}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(identity: bool, duration: int, conns: int, rate: int = 0,
        rate_duration: int = 10) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hm-mtls-bench-") as tmp:
        net = MtlsNet(Path(tmp), mode="PERMISSIVE", cert_ttl=timedelta(hours=1))
        try:
            net.up()
            net.spawn("web", SERVER_NS, [sys.executable, "-m", "hybridmesh.lab.workloads.httpsvc",
                                         "--host", SERVER_IP, "--port", str(WEB_PORT)])
            wait_port(SERVER_NS, SERVER_IP, WEB_PORT, mark=0x539)
            net.start_proxies(identity=identity)
            wrk(2, conns)  # warm-up (pools, caches)
            pids = [net.procs[n].pid for n in ("proxy-client", "proxy-server")]
            before = [cpu_s(p) for p in pids]
            result = wrk(duration, conns)
            used = [cpu_s(p) - b for p, b in zip(pids, before, strict=True)]
            result["client_proxy_us_per_req"] = used[0] / result["requests"] * 1e6
            result["server_proxy_us_per_req"] = used[1] / result["requests"] * 1e6
            if rate:
                result.update(loadgen(rate, rate_duration))
            return result
        finally:
            net.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--rate", type=int, default=1000, help="open-loop req/s (0: skip)")
    parser.add_argument("--rate-duration", type=int, default=10)
    args = parser.parse_args()
    plain_hs, verified_hs = handshake_cpu_ms()
    print(f"TLS 1.3 mTLS handshake, both sides, in memory: {plain_hs:.2f} ms CPU "
          f"({verified_hs:.2f} ms with check_peer on both sides; ~{2000 / verified_hs:.0f} "
          "handshakes/s per proxy core, one side each)")
    for identity in (False, True):
        r = run(identity, args.duration, args.conns, args.rate, args.rate_duration)
        label = "mTLS     " if identity else "plaintext"
        print(f"{label}: {r['rps']:8.0f} req/s  p50 {r.get('p50_ms', 0):.2f} ms  "
              f"p99 {r.get('p99_ms', 0):.2f} ms  non-2xx {r['non_2xx']}  "
              f"CPU/req client proxy {r['client_proxy_us_per_req']:.0f} us, "
              f"server proxy {r['server_proxy_us_per_req']:.0f} us")
        if args.rate:
            print(f"{label}: open loop {r['open_achieved_rate']:.0f} req/s  "
                  f"p50 {r['open_p50_ms']:.3f} ms  p99 {r['open_p99_ms']:.3f} ms  "
                  f"errors {r['open_errors']:.0f}")


if __name__ == "__main__":
    main()
