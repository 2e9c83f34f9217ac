"""`hybridmesh check` for real on this machine: every fatal check must pass.

This machine, like CI, has every kernel feature and tool hybridmesh needs, so nothing here
skips in CI: a failing check is a broken host (or a broken check), and the message says which.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hybridmesh.doctor import CHECKS, run_checks
from hybridmesh.lab.cgroups import detect_layout

pytestmark = pytest.mark.privileged

if os.geteuid() != 0 and os.environ.get("CI") != "true":
    pytest.skip("needs root (never skipped when CI=true)", allow_module_level=True)

HM = [sys.executable, "-m", "hybridmesh"]
NETNS_DIR = Path("/run/netns")


def scratch_namespaces() -> set[str]:
    if not NETNS_DIR.is_dir():
        return set()
    return {p.name for p in NETNS_DIR.iterdir() if p.name.startswith("hm-check-")}


def hybridmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HM, *args], capture_output=True, text=True, timeout=60, check=False)


def test_check_json_passes_every_fatal_check() -> None:
    before = scratch_namespaces()

    done = hybridmesh("check", "-o", "json")

    assert done.stderr == ""
    report: dict[str, Any] = json.loads(done.stdout)
    failed = [
        f"{c['category']}/{c['name']}: {c['detail']} (hint: {c['hint']})"
        for c in report["checks"]
        if c["fatal"] and not c["ok"]
    ]
    assert failed == [], "fatal checks failed on this host:\n" + "\n".join(failed)
    assert report["ok"] is True
    assert done.returncode == 0
    assert len(report["checks"]) == len(CHECKS)
    assert all(
        set(c) == {"category", "name", "ok", "fatal", "detail", "hint"} for c in report["checks"]
    )
    assert scratch_namespaces() == before, "hybridmesh check left its scratch netns behind"


def test_check_table_ends_with_the_verdict() -> None:
    done = hybridmesh("check")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Status check results are √" in done.stdout
    assert "kernel\n------\n" in done.stdout


def test_kernel_side_checks_are_cheap() -> None:
    kernel_side = [c for c in CHECKS if c.category not in ("libraries",)]

    start = time.perf_counter()
    report = run_checks(checks=kernel_side)
    elapsed = time.perf_counter() - start

    assert report.ok
    # The target is < 1 s (about 0.06 s here); the bound leaves room for a busy 2-core runner.
    assert elapsed < 3.0, f"kernel-side checks took {elapsed:.2f}s"


def test_cgroup_report_agrees_with_the_lab_s_own_detection() -> None:
    """The doctor must report the hierarchies the lab will actually use."""
    layout = detect_layout()
    report = run_checks(checks=[c for c in CHECKS if c.category == "cgroups"])
    cgroup2, controllers = (r.outcome for r in report.results)

    assert cgroup2.detail.startswith(f"at {layout.v2} ")
    for name in ("cpu", "memory"):
        version = "v2" if layout.is_v2(name) else "v1"
        assert f"{name} on {version} at {layout.controllers[name]}" in controllers.detail
