"""On this project's machine every eBPF program and map type hybridmesh needs is supported:
the real libbpf probes must say so (a failure here means a datapath cannot load)."""

from __future__ import annotations

import pytest

from hybridmesh.doctor._ebpf import CHECKS
from hybridmesh.doctor.checks import run_checks

pytestmark = pytest.mark.privileged


def test_every_ebpf_type_probes_as_supported() -> None:
    report = run_checks(checks=CHECKS)
    failed = [f"{r.check.name}: {r.outcome.detail}" for r in report.results if not r.ok]
    assert failed == []
    assert len(report.results) == len(CHECKS) >= 14
