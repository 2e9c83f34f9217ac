"""Pod cgroups: limits enforced by the kernel, accounting per leaf."""

from __future__ import annotations

import signal
import sys
import time

import pytest
from minilab import MiniLab, make_pod

from hybridmesh.control.model import Limits
from hybridmesh.lab import procs

pytestmark = pytest.mark.privileged

MiB = 1 << 20


def burn(seconds: float) -> list[str]:
    """A CPU burner that stops after ``seconds`` of wall-clock time."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return [sys.executable, "-c", code]


def burn_cpu(seconds: float) -> list[str]:
    """A burner that stops after using ``seconds`` of CPU (however busy the machine is)."""
    code = f"import time\nwhile time.process_time() < {seconds}: pass"
    return [sys.executable, "-c", code]


def throttled_periods(fabric: MiniLab, pod: str) -> int:
    cg = fabric.cgroups[pod]
    stat = (cg.layout.controller_dir("cpu", cg.relative) / "cpu.stat").read_text()
    fields = dict(line.split() for line in stat.splitlines())
    return int(fields["nr_throttled"])


def test_memory_limit_is_set_and_enforced(fabric: MiniLab) -> None:
    pod = fabric.add_pod(make_pod("mem-0", fabric.node("n1"), 20, Limits(memory_bytes=64 * MiB)))
    cg = fabric.cgroups[pod.name]
    memory = cg.layout.controller_dir("memory", cg.relative)
    limit_file = memory / ("memory.max" if cg.layout.is_v2("memory") else "memory.limit_in_bytes")
    assert int(limit_file.read_text()) == 64 * MiB
    hog = fabric.spawn(pod.name, [sys.executable, "-c", "x = bytearray(256 << 20); print(len(x))"])
    assert hog.wait(20) == -signal.SIGKILL  # the OOM killer, inside the pod only
    usage = cg.usage()
    assert 0 < usage.memory_peak_bytes <= 64 * MiB


def test_cpu_quota_caps_a_burner_and_accounting_is_per_leaf(fabric: MiniLab) -> None:
    capped = fabric.add_pod(make_pod("cpu-0", fabric.node("n1"), 21, Limits(cpu_millis=200)))
    free = fabric.add_pod(make_pod("cpu-1", fabric.node("n2"), 21))
    start = time.monotonic()
    burners = [fabric.spawn(capped.name, burn(1.0)), fabric.spawn(free.name, burn(1.0))]
    for proc in burners:
        assert proc.wait(10) == 0
    wall = time.monotonic() - start
    capped_cpu = fabric.cgroups[capped.name].usage()
    free_cpu = fabric.cgroups[free.name].usage()
    print(f"\n200m pod: {capped_cpu.cpu_usec / 1e6:.2f}s CPU in {wall:.2f}s; "
          f"unlimited pod: {free_cpu.cpu_usec / 1e6:.2f}s")
    assert capped_cpu.cpu_usec <= 0.2 * wall * 1e6 * 1.3  # the quota, with scheduler slack
    assert capped_cpu.cpu_usec >= 0.05e6
    assert throttled_periods(fabric, capped.name) > 0
    assert throttled_periods(fabric, free.name) == 0
    assert capped_cpu.cpu_usec_by_leaf["app"] >= capped_cpu.cpu_usec * 0.95
    assert capped_cpu.cpu_usec_by_leaf["proxy"] == 0


def test_proxy_leaf_is_accounted_apart_from_the_app(fabric: MiniLab) -> None:
    pod = fabric.add_pod(make_pod("acct-0", fabric.node("n1"), 22))
    cg = fabric.cgroups[pod.name]
    proxy = procs.spawn_in_pod(fabric.netns(pod.name), cg.procs_files("proxy"), burn_cpu(0.3), None,
                               fabric.log_dir / "proxy.log")
    fabric.started.append(proxy)
    assert proxy.wait(20) == 0
    usage = cg.usage()
    assert usage.cpu_usec_by_leaf["proxy"] >= 0.3e6
    assert usage.cpu_usec_by_leaf["app"] == 0
    assert cg.pids() == []
