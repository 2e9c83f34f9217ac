"""What each figure in a result is called, its unit, and which direction is better.

One table, read by the aggregation (which metrics a cell has), the CSV/markdown/HTML
renderers (labels and units) and the plots. Resource figures are per *operation*, and an
operation depends on the scenario: a request (HTTP), a transaction (tcp-rr) or a MiB moved
(tcp-stream).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CPU_COMPONENTS",
    "METRICS",
    "RESOURCE_METRICS",
    "SCENARIO_METRICS",
    "MetricInfo",
    "op_unit",
]


@dataclass(frozen=True, slots=True)
class MetricInfo:
    label: str
    unit: str
    higher_is_better: bool = False


CPU_COMPONENTS = ("loadgen", "app", "proxy_client", "proxy_server", "node_proxy", "ebpf")
"""Stacked in the CPU plot, in this order; ``loadgen`` is shown to prove it is not the limit."""

METRICS: dict[str, MetricInfo] = {
    "rps": MetricInfo("achieved rate", "req/s", higher_is_better=True),
    "errors": MetricInfo("errors", "count"),
    "p50_ms": MetricInfo("p50", "ms"),
    "p90_ms": MetricInfo("p90", "ms"),
    "p99_ms": MetricInfo("p99", "ms"),
    "p999_ms": MetricInfo("p99.9", "ms"),
    "mean_ms": MetricInfo("mean", "ms"),
    "send_lag_p99_ms": MetricInfo("loadgen send lag p99", "ms"),
    "tps": MetricInfo("transactions", "txn/s", higher_is_better=True),
    "rtt_p50_us": MetricInfo("RTT p50", "µs"),
    "rtt_p99_us": MetricInfo("RTT p99", "µs"),
    "gbps": MetricInfo("throughput", "Gbit/s", higher_is_better=True),
    "cpu_loadgen_pct": MetricInfo("load generator CPU", "% of a core"),
    "cpu_loadgen_us_per_op": MetricInfo("load generator CPU", "µs/op"),
    "cpu_app_us_per_op": MetricInfo("server app CPU", "µs/op"),
    "cpu_proxy_client_us_per_op": MetricInfo("client-side proxy CPU", "µs/op"),
    "cpu_proxy_server_us_per_op": MetricInfo("server-side proxy CPU", "µs/op"),
    "cpu_node_proxy_us_per_op": MetricInfo("node proxies' CPU", "µs/op"),
    "cpu_proxy_us_per_op": MetricInfo("proxy CPU (both sides)", "µs/op"),
    "cpu_ebpf_us_per_op": MetricInfo("kernel eBPF CPU", "µs/op"),
    "rss_proxy_client_mib": MetricInfo("client-side proxy peak RSS", "MiB"),
    "rss_proxy_server_mib": MetricInfo("server-side proxy peak RSS", "MiB"),
    "rss_node_proxy_mib": MetricInfo("node proxies' peak RSS", "MiB"),
    "rss_proxy_mib": MetricInfo("proxy peak RSS (both sides)", "MiB"),
    "rss_loadgen_mib": MetricInfo("load generator peak RSS", "MiB"),
    "rss_app_mib": MetricInfo("server app peak RSS", "MiB"),
    "target_rps": MetricInfo("target rate", "req/s"),
    # scale
    "mesh_pss_mib": MetricInfo("mesh memory (PSS)", "MiB"),
    "mesh_pss_per_pod_mib": MetricInfo("mesh memory per pod (PSS)", "MiB"),
    "shared_pss_mib": MetricInfo("shared node mesh memory (PSS)", "MiB"),
    "app_pss_mib": MetricInfo("apps' memory (PSS)", "MiB"),
    "mesh_cpu_pct": MetricInfo("mesh CPU", "% of a core"),
    "mesh_cpu_per_pod_pct": MetricInfo("mesh CPU per pod", "% of a core"),
    "ebpf_cpu_pct": MetricInfo("kernel eBPF CPU", "% of a core"),
    # blast-radius, upgrade
    "requests": MetricInfo("requests in the lab", "count", higher_is_better=True),
    "failed": MetricInfo("failed requests", "count"),
    "failed_pct": MetricInfo("failed share of all requests", "%"),
    "failed_affected": MetricInfo("failed on the affected paths", "count"),
    "failed_unaffected": MetricInfo("failed on the unaffected paths", "count"),
    "recovery_s": MetricInfo("time to recover", "s"),
    "recovered": MetricInfo("recovered in the window", "1 = yes", higher_is_better=True),
    "pod_restarts": MetricInfo("pod restarts needed", "count"),
    "upgrade_s": MetricInfo("upgrade duration", "s"),
    "node_restarts": MetricInfo("node components replaced (agents, node proxies)", "count"),
    # tls-handshake
    "handshakes_per_s": MetricInfo("full mTLS handshakes", "/s", higher_is_better=True),
    "handshakes_per_core_s": MetricInfo(
        "mTLS handshakes per server-proxy core", "/core-s", higher_is_better=True
    ),
}

RESOURCE_METRICS = (
    "cpu_loadgen_pct",
    "cpu_loadgen_us_per_op",
    "cpu_app_us_per_op",
    "cpu_proxy_client_us_per_op",
    "cpu_proxy_server_us_per_op",
    "cpu_node_proxy_us_per_op",
    "cpu_proxy_us_per_op",
    "cpu_ebpf_us_per_op",
    "rss_proxy_client_mib",
    "rss_proxy_server_mib",
    "rss_node_proxy_mib",
    "rss_proxy_mib",
    "rss_loadgen_mib",
    "rss_app_mib",
)

SCENARIO_METRICS: dict[str, tuple[str, ...]] = {
    "http-latency": (
        "rps", "errors", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "mean_ms", "send_lag_p99_ms",
        *RESOURCE_METRICS,
    ),
    "http-throughput": ("rps", "errors", "p50_ms", "p99_ms", *RESOURCE_METRICS),
    "tcp-rr": ("tps", "rtt_p50_us", "rtt_p99_us", *RESOURCE_METRICS),
    "tcp-stream": ("gbps", *RESOURCE_METRICS),
    "grpc": ("rps", "errors", "p50_ms", "p90_ms", "p99_ms", "p999_ms", *RESOURCE_METRICS),
    "scale": (
        "mesh_pss_mib", "mesh_pss_per_pod_mib", "shared_pss_mib", "app_pss_mib",
        "mesh_cpu_pct", "mesh_cpu_per_pod_pct", "ebpf_cpu_pct", "rps", "target_rps", "errors",
        "cpu_loadgen_pct",
    ),
    "blast-radius": (
        "failed_pct", "failed", "failed_affected", "failed_unaffected", "recovery_s",
        "recovered", "requests",
    ),
    "upgrade": ("failed_pct", "failed", "pod_restarts", "node_restarts", "upgrade_s", "requests"),
    "tls-handshake": ("handshakes_per_s", "handshakes_per_core_s", "errors", *RESOURCE_METRICS),
}  # fmt: skip
"""Every metric a sample of the scenario must have (the integration test checks all filled)."""

_OP_UNITS = {"tcp-rr": "txn", "tcp-stream": "MiB", "tls-handshake": "handshake"}


def op_unit(scenario: str) -> str:
    """What one operation is in ``scenario`` (``µs/op`` figures are per this)."""
    return _OP_UNITS.get(scenario, "req")
