"""Micro-benchmarks for the proxy's hot-path telemetry (not collected by pytest).

    .venv/bin/python tests/unit/telemetry/bench_telemetry.py

Prints the cost of one ``ProxyMetrics.request()`` (cache hit, reused Peer objects, and equal
but freshly built Peers), of the prometheus-client primitives it calls, of ``AccessLog.log()``
(the caller's side only; the writer thread serializes), and of one ``exposition()`` with
100 label sets.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

from hybridmesh.telemetry.access_log import AccessLog
from hybridmesh.telemetry.proxy_metrics import Peer, ProxyMetrics

N = 200_000
SVC = "web.shop.svc.cluster.local"


def per_call_us(fn: Callable[[], object], n: int = N) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    return best


def main() -> None:
    m = ProxyMetrics()
    src = Peer("client", "shop", "spiffe://cluster.local/ns/shop/sa/client")
    dst = Peer("web", "shop", "spiffe://cluster.local/ns/shop/sa/web")

    def hit() -> None:
        m.request(reporter="source", source=src, destination=dst, service=SVC, protocol="http",
                  status=200, grpc_status="", flags="-", latency_s=0.0012)  # fmt: skip

    def fresh_peers() -> None:
        m.request(reporter="source", source=Peer("client", "shop", src.principal),
                  destination=Peer("web", "shop", dst.principal), service=SVC, protocol="http",
                  status=200, grpc_status="", flags="-", latency_s=0.0012)  # fmt: skip

    hit()
    child = next(iter(m._requests.values()))
    print(f"request() cache hit, reused peers : {per_call_us(hit):6.2f} µs")
    print(f"request() cache hit, fresh peers  : {per_call_us(fresh_peers):6.2f} µs")
    print(f"  Counter child inc()             : {per_call_us(child.count.inc):6.2f} µs")
    print(f"  Histogram child observe()       : "
          f"{per_call_us(lambda: child.latency.observe(1.2)):6.2f} µs")  # fmt: skip
    labels = ("source", "a", "b", "c", "d", "e", "f", "g", "http", "200", "", "-")
    print(f"  (uncached .labels() for compare): "
          f"{per_call_us(lambda: m.request_total.labels(*labels)):6.2f} µs")  # fmt: skip
    log = AccessLog(io.StringIO(), max_pending=10 * N)
    record = {"method": "GET", "path": "/api", "response_code": 200, "duration_ms": 1.2}
    print(f"AccessLog.log() (caller side)     : "
          f"{per_call_us(lambda: log.log(record), n=N // 5):6.2f} µs")  # fmt: skip
    log.close(timeout=60)
    for i in range(100):
        m.request(reporter="destination", source=Peer(f"w{i}", "shop", "p"), destination=dst,
                  service=SVC, protocol="http", status=200, grpc_status="", flags="-",
                  latency_s=0.001)  # fmt: skip
    print(f"exposition() with 101 label sets  : {per_call_us(m.exposition, n=50) / 1000:6.2f} ms")


if __name__ == "__main__":
    main()
