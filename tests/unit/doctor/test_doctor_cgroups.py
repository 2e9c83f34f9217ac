from __future__ import annotations

import dataclasses
from pathlib import Path

from doctor_fakes import HYBRID_MOUNTINFO, write_mountinfo

from hybridmesh.doctor import Host, Session
from hybridmesh.doctor._cgroups import detect_layout, probe_cgroup2, probe_controllers
from hybridmesh.doctor._mountinfo import parse_mountinfo

UNIFIED = "30 23 0:26 / {root}/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
LEGACY = "\n".join(line for line in HYBRID_MOUNTINFO.splitlines() if "cgroup2" not in line)


def host_with(healthy_host: Host, tmp_path: Path, mountinfo: str, v2_controllers: str) -> Host:
    path = write_mountinfo(tmp_path, mountinfo)
    (tmp_path / "cgroup").mkdir(exist_ok=True)
    (tmp_path / "cgroup" / "cgroup.controllers").write_text(v2_controllers + "\n")
    return dataclasses.replace(healthy_host, mountinfo=path)


def test_hybrid_layout_finds_v2_and_the_v1_controllers(healthy_host: Host, tmp_path: Path) -> None:
    session = Session(healthy_host)

    cgroup2 = probe_cgroup2(session)
    controllers = probe_controllers(session)

    assert cgroup2.ok
    assert cgroup2.detail == f"at {tmp_path}/cgroup/unified (hybrid layout)"
    assert controllers.ok
    assert controllers.detail == (
        f"hybrid layout: cpu on v1 at {tmp_path}/cgroup/cpu, "
        f"memory on v1 at {tmp_path}/cgroup/memory"
    )


def test_unified_layout_uses_the_v2_controllers(healthy_host: Host, tmp_path: Path) -> None:
    host = host_with(healthy_host, tmp_path, UNIFIED, "cpuset cpu io memory pids")

    outcome = probe_controllers(Session(host))

    assert outcome.ok
    assert outcome.detail == (
        f"unified layout: cpu on v2 at {tmp_path}/cgroup, memory on v2 at {tmp_path}/cgroup"
    )


def test_unified_without_memory_fails_naming_it(healthy_host: Host, tmp_path: Path) -> None:
    host = host_with(healthy_host, tmp_path, UNIFIED, "cpuset cpu io pids")

    outcome = probe_controllers(Session(host))

    assert not outcome.ok
    assert outcome.detail == "unified layout; not available: memory"


def test_legacy_layout_has_controllers_but_no_cgroup2(healthy_host: Host, tmp_path: Path) -> None:
    host = dataclasses.replace(healthy_host, mountinfo=write_mountinfo(tmp_path, LEGACY))
    session = Session(host)

    cgroup2 = probe_cgroup2(session)

    assert not cgroup2.ok
    assert "legacy layout" in cgroup2.detail
    assert probe_controllers(session).detail.startswith("legacy layout: cpu on v1")


def test_nothing_mounted_fails_both(healthy_host: Host, tmp_path: Path) -> None:
    host = host_with(healthy_host, tmp_path, "", "")
    session = Session(host)

    assert not probe_cgroup2(session).ok
    assert probe_controllers(session).detail == "none layout; not available: cpu, memory"


def test_named_v1_hierarchies_without_controllers_do_not_make_a_hybrid() -> None:
    text = UNIFIED + "40 31 0:37 / /x/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"

    layout = detect_layout(parse_mountinfo(text.format(root="/r")))

    assert layout.name == "unified"


def test_the_shortest_v2_mount_wins_over_a_deeper_bind_mount() -> None:
    text = (
        "50 1 0:26 / /r/a/b/c rw - cgroup2 cgroup2 rw\n51 1 0:26 / /r/a rw - cgroup2 cgroup2 rw\n"
    )

    layout = detect_layout(parse_mountinfo(text))

    assert layout.v2 is not None
    assert layout.v2.mount_point == "/r/a"
