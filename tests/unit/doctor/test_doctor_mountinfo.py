from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.doctor._mountinfo import Mount, parse_mountinfo

SAMPLE = """\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
42 23 0:39 / /sys/fs/bpf rw,relatime shared:12 master:3 - bpf bpf rw,mode=700
"""


def test_parses_fstype_mount_point_and_super_options() -> None:
    mounts = parse_mountinfo(SAMPLE)

    assert mounts == [
        Mount("/sys/fs/cgroup/cpu", "cgroup", "cgroup", frozenset({"rw", "cpu", "cpuacct"})),
        Mount("/sys/fs/cgroup/unified", "cgroup2", "cgroup2", frozenset({"rw", "nsdelegate"})),
        Mount("/sys/fs/bpf", "bpf", "bpf", frozenset({"rw", "mode=700"})),
    ]


def test_any_number_of_optional_fields_before_the_separator() -> None:
    line = "42 23 0:39 / /mnt rw shared:1 master:2 propagate_from:3 unbindable - tmpfs none rw"

    (mount,) = parse_mountinfo(line)

    assert (mount.mount_point, mount.fstype, mount.source) == ("/mnt", "tmpfs", "none")


def test_octal_escapes_in_paths_are_decoded() -> None:
    (mount,) = parse_mountinfo(r"1 2 0:3 / /mnt/with\040space rw - tmpfs my\134src rw")

    assert mount.mount_point == "/mnt/with space"
    assert mount.source == "my\\src"


def test_malformed_lines_are_skipped_not_fatal() -> None:
    text = "garbage\n1 2 0:3 / /x rw no-separator here\n\n" + SAMPLE.splitlines()[0]

    assert [m.mount_point for m in parse_mountinfo(text)] == ["/sys/fs/cgroup/cpu"]


@given(st.text())
def test_never_raises_on_arbitrary_text(text: str) -> None:
    assert all(isinstance(m, Mount) for m in parse_mountinfo(text))
