"""The headline comparisons: said when both sides were measured, silent otherwise."""

from __future__ import annotations

from bench_fixtures import latency_metrics, sample

from hybridmesh.bench.headlines import headlines
from hybridmesh.bench.stats import aggregate


def test_sidecar_vs_envoy_and_ebpf_vs_sidecar_at_the_summary_rate() -> None:
    cells = aggregate([
        sample("none", latency_metrics(0.2, 1.0), order=0),
        sample("sidecar", latency_metrics(0.8, 3.0, proxy_cpu=200.0), order=1),
        sample("sidecar+ebpf", latency_metrics(0.6, 2.5, proxy_cpu=150.0), order=2),
        sample("envoy-sidecar", latency_metrics(0.6, 5.0, proxy_cpu=100.0), order=3),
    ], ["none", "sidecar", "sidecar+ebpf", "envoy-sidecar"])  # fmt: skip
    lines = headlines(cells, ["same-node"])
    assert lines[0] == (
        "sidecar vs Envoy, same-node at 1000 req/s: added p99 2 ms vs 4 ms; "
        "added p50 0.6 ms vs 0.4 ms"
    )
    assert lines[1] == (
        "sidecar+ebpf vs sidecar, same-node at 1000 req/s: p50 ×0.75 (0.6 vs 0.8 ms); "
        "added p50 0.4 vs 0.6 ms (-33 %); proxy CPU ×0.75 per request (150 vs 200 µs)"
    )
    assert len(lines) == 2  # no kernel, no scale: nothing said about them


def test_ebpf_headline_puts_the_kernel_cpu_beside_the_proxies() -> None:
    ebpf = {**latency_metrics(0.5, 2.0, proxy_cpu=120.0), "cpu_ebpf_us_per_op": 1.5}
    cells = aggregate([
        sample("none", latency_metrics(0.2, 1.0), order=0),
        sample("sidecar", latency_metrics(0.6, 3.0, proxy_cpu=160.0), order=1),
        sample("sidecar+ebpf", ebpf, order=2),
    ], ["none", "sidecar", "sidecar+ebpf"])  # fmt: skip
    (line,) = headlines(cells, ["same-node"])
    assert "added p50 0.3 vs 0.4 ms (-25 %)" in line
    assert line.endswith("proxy CPU ×0.75 per request (120 µs + 1.5 µs kernel eBPF vs 160 µs)")


def test_memory_scaling_lists_each_contender_over_the_levels() -> None:
    samples = [
        sample(c, {"mesh_pss_mib": mib}, scenario="scale", level=n, order=i)
        for i, (c, n, mib) in enumerate([
            ("none", 2, 0.0), ("sidecar", 2, 48.0), ("node", 2, 55.0),
            ("none", 8, 0.0), ("sidecar", 8, 192.0), ("node", 8, 56.0),
        ])
    ]  # fmt: skip
    (line,) = headlines(aggregate(samples), ["same-node"])
    assert (
        line == "mesh memory (PSS) at 2 → 8 pods per node: sidecar 48 → 192 MiB; node 55 → 56 MiB"
    )


def test_nothing_measured_says_nothing() -> None:
    assert headlines([], ["same-node", "cross-node"]) == []


def test_mtls_against_plaintext_for_both_proxies_and_handshakes_per_core() -> None:
    names = ["none", "sidecar", "sidecar-plaintext", "envoy-sidecar", "envoy-sidecar-mtls"]
    p50s = [0.2, 0.8, 0.5, 0.6, 0.7]
    latency = [
        sample(c, latency_metrics(p50, p50 * 4), order=i)
        for i, (c, p50) in enumerate(zip(names, p50s, strict=True))
    ]
    handshakes = [
        sample(c, {"handshakes_per_s": wall, "handshakes_per_core_s": core},
               scenario="tls-handshake", level=None, order=10 + i)
        for i, (c, wall, core) in enumerate([("sidecar", 200.0, 600.0),
                                             ("envoy-sidecar-mtls", 400.0, 1500.0)])
    ]  # fmt: skip
    lines = headlines(aggregate([*latency, *handshakes], names), ["same-node"])
    mtls = next(line for line in lines if line.startswith("mTLS vs plaintext"))
    assert mtls == (
        "mTLS vs plaintext, same-node at 1000 req/s: sidecar vs sidecar-plaintext: added p50 "
        "0.6 vs 0.3 ms, added p99 2.4 vs 1.2 ms; envoy-sidecar-mtls vs envoy-sidecar: added "
        "p50 0.5 vs 0.4 ms, added p99 2 vs 1.6 ms"
    )
    assert lines[-1] == (
        "full mTLS handshakes per server-proxy core: sidecar 600/core-s (200/s wall); "
        "envoy-sidecar-mtls 1500/core-s (400/s wall)"
    )
