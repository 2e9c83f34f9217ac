"""The capture loader's tables agree with capture.bpf.c, and an upgrade drops retired pins."""

from __future__ import annotations

import re
from pathlib import Path

from hybridmesh.ebpf import capture
from hybridmesh.ebpf.build import BPF_DIR

SOURCE = (BPF_DIR / "capture.bpf.c").read_text()


def _sections() -> dict[str, str]:
    """program name -> its SEC() in the C source."""
    found = re.findall(r'SEC\("([^"]+)"\)\s*\nint (\w+)\(', SOURCE)
    return {name: sec for sec, name in found}


def test_every_cgroup_hook_is_the_program_of_that_attach_point() -> None:
    sections = _sections()
    for hook, program in capture.CGROUP_HOOKS.items():
        want = hook if hook == "sockops" else f"cgroup/{hook}"
        assert sections.get(program) == want, (hook, program)
    assert sections[capture.NETNS_HOOK[1]] == capture.NETNS_HOOK[0]


def test_getpeername_is_hooked_for_both_families() -> None:
    # connect6 captures v4-mapped AF_INET6 sockets: their getpeername needs its own hook
    assert {"getpeername4", "getpeername6", "connect4", "connect6"} <= set(capture.CGROUP_HOOKS)


def test_every_map_the_loader_pins_is_in_the_object_and_retired_ones_are_not() -> None:
    maps = set(re.findall(r"\}\s*(\w+)\s+SEC\(\"\.maps\"\)", SOURCE))
    assert maps == set(capture.MAPS)
    assert not maps & set(capture.RETIRED_MAPS)


def test_load_drops_the_pins_of_retired_maps(tmp_path: Path) -> None:
    for name in (*capture.RETIRED_MAPS, "orig_by_addr"):
        (tmp_path / name).write_text("")
    capture._drop_retired(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orig_by_addr"]
    capture._drop_retired(tmp_path)  # nothing left to drop: no error
