"""Scale figures: PSS parsing, totals and per-pod shares."""

from __future__ import annotations

import pytest

from hybridmesh.bench.scale import parse_pss_kib, scale_metrics

ROLLUP = """\
55d0c0a00000-7ffd4e1f3000 ---p 00000000 00:00 0                          [rollup]
Rss:               24576 kB
Pss:               11234 kB
Pss_Anon:           9000 kB
Shared_Clean:      14000 kB
"""


def test_pss_is_read_from_smaps_rollup_not_its_anon_part() -> None:
    assert parse_pss_kib(ROLLUP) == 11234
    assert parse_pss_kib("Rss: 10 kB\n") == 0


def test_scale_metrics_totals_and_per_pod() -> None:
    m = scale_metrics(
        8, proxy_pss=80 << 20, shared_pss=16 << 20, app_pss=40 << 20,
        proxy_cpu_us=400_000, ebpf_ns=100_000_000, seconds=10.0,
    )  # fmt: skip
    assert m["mesh_pss_mib"] == 96 and m["mesh_pss_per_pod_mib"] == 12
    assert m["shared_pss_mib"] == 16 and m["app_pss_mib"] == 40
    assert m["mesh_cpu_pct"] == pytest.approx(4.0 + 1.0)  # 0.4 s proxies + 0.1 s eBPF in 10 s
    assert m["ebpf_cpu_pct"] == pytest.approx(1.0)
    assert m["mesh_cpu_per_pod_pct"] == pytest.approx(5.0 / 8)


def test_no_mesh_costs_nothing() -> None:
    m = scale_metrics(2, proxy_pss=0, shared_pss=0, app_pss=1, proxy_cpu_us=0, ebpf_ns=0,
                      seconds=5.0)  # fmt: skip
    assert m["mesh_pss_mib"] == 0 and m["mesh_cpu_pct"] == 0
