"""cgroup layout detection from mountinfo, and pod cgroups on a fake hierarchy tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridmesh.control.model import Limits
from hybridmesh.lab._sh import LabError
from hybridmesh.lab.cgroups import (
    CONTROLLERS,
    CgroupLayout,
    PodCgroup,
    build_layout,
    daemon_procs_files,
    parse_mountinfo,
)

HYBRID = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

PURE_V2 = """\
29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""

COMBINED = """\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw
"""


def test_hybrid_layout_takes_resource_controllers_from_v1() -> None:
    layout = build_layout(parse_mountinfo(HYBRID), ["hugetlb"])
    root = Path("/sys/fs/cgroup")
    assert layout.v2 == root / "unified"
    assert layout.controllers == {
        "cpu": root / "cpu", "cpuacct": root / "cpuacct",
        "memory": root / "memory", "pids": root / "pids",
    }
    assert not layout.is_v2("memory")
    assert layout.hierarchies[0] == root / "unified"
    assert root / "systemd" in layout.all_roots and root / "systemd" not in layout.hierarchies


def test_pure_v2_layout_serves_everything_from_the_unified_tree() -> None:
    layout = build_layout(parse_mountinfo(PURE_V2), ["cpuset", "cpu", "io", "memory", "pids"])
    assert set(layout.controllers.values()) == {Path("/sys/fs/cgroup")}
    assert layout.hierarchies == (Path("/sys/fs/cgroup"),)


def test_combined_v1_mount_counts_once_and_missing_pids_is_absent() -> None:
    layout = build_layout(parse_mountinfo(COMBINED), [])
    cpu = Path("/sys/fs/cgroup/cpu,cpuacct")
    assert layout.controllers["cpu"] == layout.controllers["cpuacct"] == cpu
    assert "pids" not in layout.controllers
    assert layout.hierarchies.count(cpu) == 1


def test_a_v2_controller_wins_over_its_v1_mount() -> None:
    layout = build_layout(parse_mountinfo(HYBRID), ["pids"])
    assert layout.is_v2("pids") and not layout.is_v2("cpu")


def test_escaped_mount_points_are_decoded() -> None:
    text = "41 31 0:38 / /mnt/cgroup\\040two rw - cgroup2 cgroup2 rw\n"
    assert parse_mountinfo(text)[0].path == Path("/mnt/cgroup two")


def test_no_cgroup2_is_a_clear_error() -> None:
    with pytest.raises(LabError, match="cgroup v2 is not mounted"):
        build_layout(parse_mountinfo(COMBINED.splitlines()[0]), [])


def fake_layout(tmp_path: Path, *, v2_controllers: bool) -> CgroupLayout:
    v2 = tmp_path / "unified"
    v2.mkdir()
    if v2_controllers:
        return CgroupLayout(v2=v2, controllers=dict.fromkeys(CONTROLLERS, v2))
    roots = {c: tmp_path / c for c in CONTROLLERS}
    return CgroupLayout(v2=v2, controllers=roots, v1_mounts=tuple(roots.values()))


def test_v1_limits_go_on_the_pod_level_and_leaves_exist(tmp_path: Path) -> None:
    cg = PodCgroup("shop", "web-0", fake_layout(tmp_path, v2_controllers=False))
    cg.create(Limits(cpu_millis=250, memory_bytes=64 << 20))
    pod = Path("hm-lab/hm-pod-shop.web-0")
    assert (tmp_path / "cpu" / pod / "cpu.cfs_quota_us").read_text() == "25000"
    assert (tmp_path / "cpu" / pod / "cpu.cfs_period_us").read_text() == "100000"
    assert (tmp_path / "memory" / pod / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (tmp_path / "unified" / pod / "proxy").is_dir()
    assert cg.v2_path == tmp_path / "unified" / pod
    files = cg.procs_files("proxy")
    assert len(files) == 5 and all(f == f.parent / "cgroup.procs" for f in files)
    assert {f.parent.name for f in files} == {"proxy"}


def test_v2_limits_use_cpu_max_and_memory_max(tmp_path: Path) -> None:
    cg = PodCgroup("shop", "web-0", fake_layout(tmp_path, v2_controllers=True))
    cg.create(Limits(cpu_millis=1500))
    pod = tmp_path / "unified" / "hm-lab" / "hm-pod-shop.web-0"
    assert (pod / "cpu.max").read_text() == "150000 100000"
    assert (pod / "memory.max").read_text() == "max"
    assert (pod / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"


def test_usage_reads_v1_accounting(tmp_path: Path) -> None:
    cg = PodCgroup("shop", "web-0", fake_layout(tmp_path, v2_controllers=False))
    cg.create()
    acct = tmp_path / "cpuacct" / "hm-lab" / "hm-pod-shop.web-0"
    (acct / "cpuacct.usage").write_text("3000000\n")
    (acct / "app" / "cpuacct.usage").write_text("2000000\n")
    (acct / "proxy" / "cpuacct.usage").write_text("1000000\n")
    mem = tmp_path / "memory" / "hm-lab" / "hm-pod-shop.web-0"
    (mem / "memory.usage_in_bytes").write_text("4096\n")
    (mem / "memory.max_usage_in_bytes").write_text("8192\n")
    usage = cg.usage()
    assert (usage.cpu_usec, usage.memory_bytes, usage.memory_peak_bytes) == (3000, 4096, 8192)
    assert usage.cpu_usec_by_leaf == {"app": 2000, "proxy": 1000}


def test_unknown_leaf_is_refused(tmp_path: Path) -> None:
    cg = PodCgroup("shop", "web-0", fake_layout(tmp_path, v2_controllers=True))
    with pytest.raises(LabError, match="leaf"):
        cg.procs_files("sidecar")


def test_daemon_cgroup_exists_in_every_used_hierarchy(tmp_path: Path) -> None:
    layout = fake_layout(tmp_path, v2_controllers=False)
    files = daemon_procs_files(layout)
    assert [f.parent for f in files] == [r / "hm-lab" / "hm-daemon" for r in layout.hierarchies]
    assert all(f.parent.is_dir() for f in files)
