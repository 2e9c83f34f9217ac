"""The machine and versions every result carries."""

from __future__ import annotations

import platform
from pathlib import Path

from hybridmesh.bench import machine


def test_cpu_model_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU @ 3.0GHz\n")
    assert machine._cpu_model(cpuinfo) == "Example CPU @ 3.0GHz"


def test_machine_describes_this_host() -> None:
    m = machine.machine()
    assert m.kernel == platform.release()
    assert m.cores >= 1 and m.memory_bytes > 0
    assert len(m.loadavg_start) == 3


def test_versions_name_python_the_package_and_the_commit() -> None:
    v = machine.versions("1.40.0")
    assert v.python == platform.python_version()
    assert v.envoy == "1.40.0" and v.hybridmesh != "unknown"
    assert v.git_commit is None or len(v.git_commit) == 40
