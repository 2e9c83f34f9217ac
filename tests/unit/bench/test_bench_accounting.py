"""Resource accounting: per-op CPU by component, RSS in MiB, eBPF run time from bpftool."""

from __future__ import annotations

import json

import pytest

from hybridmesh.bench.accounting import Peaks, Usage, parse_bpftool_progs, usage_metrics


def _usage(at: float, *counters: int) -> Usage:
    """CPU µs of loadgen, app, client proxy, server proxy, then eBPF ns."""
    loadgen, app, client, server, bpf = counters
    cpu = {"loadgen": loadgen, "app": app, "proxy_client": client, "proxy_server": server}
    return Usage(at, cpu, bpf)


def test_cpu_is_split_per_component_and_per_operation() -> None:
    before = _usage(100.0, 1_000, 2_000, 3_000, 4_000, 5_000)
    after = _usage(102.0, 401_000, 102_000, 203_000, 304_000, 2_005_000)  # 2 s later
    m = usage_metrics(before, after, 1000, Peaks(40 << 20, 60 << 20, 30 << 20, 20 << 20))
    assert m["cpu_loadgen_pct"] == 20.0  # 0.4 s of CPU in 2 s
    assert m["cpu_loadgen_us_per_op"] == 400.0
    assert m["cpu_app_us_per_op"] == 100.0
    assert m["cpu_proxy_client_us_per_op"] == 200.0
    assert m["cpu_proxy_server_us_per_op"] == 300.0
    assert m["cpu_proxy_us_per_op"] == 500.0
    assert m["cpu_ebpf_us_per_op"] == 2.0  # 2 ms of run_time_ns over 1000 ops
    assert (m["rss_loadgen_mib"], m["rss_app_mib"]) == (30, 20)
    assert (m["rss_proxy_client_mib"], m["rss_proxy_server_mib"], m["rss_proxy_mib"]) == (
        40,
        60,
        100,
    )


def test_no_operations_means_no_per_op_figures_not_a_division_by_zero() -> None:
    u = _usage(1.0, 0, 0, 0, 0, 0)
    m = usage_metrics(u, _usage(2.0, 10, 10, 10, 10, 10), 0, Peaks(0, 0))
    assert m["cpu_proxy_us_per_op"] == 0.0


def test_bpftool_run_time_of_the_labs_programs_only() -> None:
    progs = [
        {"id": 1, "name": "hm_connect4", "run_time_ns": 1500, "run_cnt": 3},
        {"id": 2, "name": "sd_devices", "run_time_ns": 99999},
        {"id": 3, "name": "hm_getpeername4"},  # stats were off when it ran
        {"id": 4, "name": "hm_sockops", "run_time_ns": 500},
    ]
    assert parse_bpftool_progs(json.dumps(progs)) == 2000
    assert parse_bpftool_progs("") == 0
    assert parse_bpftool_progs("[]") == 0


@pytest.mark.parametrize("ops", [1.0, 1e6])
def test_per_op_scales_inversely_with_ops(ops: float) -> None:
    m = usage_metrics(_usage(0, 0, 0, 0, 0, 0), _usage(1, 0, 0, 1_000_000, 0, 0), ops, Peaks(0, 0))
    assert m["cpu_proxy_client_us_per_op"] == pytest.approx(1_000_000 / ops)


def test_node_proxies_count_as_the_proxy_of_a_node_placement() -> None:
    before = Usage(0.0, {"loadgen": 0, "app": 0, "proxy_client": 0, "proxy_server": 0,
                         "node_proxy": 0}, 0)  # fmt: skip
    after = Usage(1.0, {"loadgen": 0, "app": 0, "proxy_client": 0, "proxy_server": 0,
                        "node_proxy": 150_000}, 0)  # fmt: skip
    m = usage_metrics(before, after, 1000, Peaks(0, 0, node_proxy_bytes=50 << 20))
    assert m["cpu_node_proxy_us_per_op"] == 150.0 and m["cpu_proxy_us_per_op"] == 150.0
    assert m["rss_node_proxy_mib"] == 50 and m["rss_proxy_mib"] == 50
