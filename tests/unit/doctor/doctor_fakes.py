"""Fakes for the doctor's probes: a scripted command runner, a fake libbpf, fake /proc files.

Imported by this directory's tests and conftest (pytest puts the directory on sys.path); the
name is unique so it cannot collide with another directory's helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridmesh.doctor import CommandResult

PID = 4242
NETNS = f"hm-check-{PID}"

# This project's CI machine: cgroup v2 beside v1 controller hierarchies, bpffs mounted.
HYBRID_MOUNTINFO = """\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / {root}/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / {root}/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
33 31 0:30 / {root}/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / {root}/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / {root}/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / {root}/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw,nsdelegate
42 23 0:39 / {root}/bpf rw,relatime - bpf bpf rw,mode=700
"""


@dataclass
class FakeRunner:
    """Answers commands from a script; records every call. Unscripted commands succeed.

    ``fail`` maps an argv *fragment* (consecutive words, binaries by basename) to the result
    that any command containing it returns.
    """

    fail: dict[tuple[str, ...], CommandResult] = field(default_factory=dict)
    stdout: dict[tuple[str, ...], str] = field(default_factory=dict)
    calls: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], stdin: str | None) -> CommandResult:
        words = tuple(Path(a).name if a.startswith("/") else a for a in argv)
        self.calls.append((words, stdin))
        for fragment, result in self.fail.items():
            if _contains(words, fragment):
                return result
        for fragment, out in self.stdout.items():
            if _contains(words, fragment):
                return CommandResult(0, out)
        return CommandResult(0)

    def commands(self) -> list[tuple[str, ...]]:
        return [words for words, _ in self.calls]

    def count(self, *fragment: str) -> int:
        return sum(_contains(words, fragment) for words in self.commands())


def _contains(words: tuple[str, ...], fragment: tuple[str, ...]) -> bool:
    n = len(fragment)
    return any(words[i : i + n] == fragment for i in range(len(words) - n + 1))


@dataclass
class FakeMapCreate:
    """Stands in for libbpf's ``bpf_map_create`` (ctypes sets restype/argtypes on it)."""

    result: int
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    restype: Any = None
    argtypes: Any = None

    def __call__(self, *args: Any) -> int:
        self.calls.append(args)
        return self.result


class FakeLibbpf:
    def __init__(self, map_fd: int = 7, probe: int = 1) -> None:
        self.bpf_map_create = FakeMapCreate(map_fd)
        # libbpf's feature probes: 1 supported, 0 not, <0 -errno (probe could not run)
        self.libbpf_probe_bpf_prog_type = FakeMapCreate(probe)
        self.libbpf_probe_bpf_map_type = FakeMapCreate(probe)
        self.bpf_obj_get_info_by_fd = FakeMapCreate(0)

    def libbpf_major_version(self) -> int:
        return 1

    def libbpf_minor_version(self) -> int:
        return 1


def write_mountinfo(tmp_path: Path, text: str = HYBRID_MOUNTINFO) -> Path:
    """Write a mountinfo whose ``{root}`` is ``tmp_path`` and create the v2 root's
    ``cgroup.controllers`` (hybrid: no resource controllers on v2)."""
    (tmp_path / "cgroup" / "unified").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup" / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    path = tmp_path / "mountinfo"
    path.write_text(text.format(root=tmp_path))
    return path
