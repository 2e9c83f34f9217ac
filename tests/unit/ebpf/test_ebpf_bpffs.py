"""bpffs helpers on a fake mountinfo and plain directories; BpfError's text."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf._libbpf import BpfObject
from hybridmesh.ebpf.errors import BpfError

MOUNTINFO = """\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:26 / /sys/fs/bpf rw,relatime shared:9 - bpf bpf rw
31 22 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 22 0:28 / /mnt/notbpf rw - tmpfs tmpfs rw
"""


@pytest.fixture
def mountinfo(tmp_path: Path) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return path


def test_is_mounted_wants_a_bpf_filesystem_exactly_there(mountinfo: Path) -> None:
    assert bpffs.is_mounted(Path("/sys/fs/bpf"), mountinfo)
    assert not bpffs.is_mounted(Path("/mnt/notbpf"), mountinfo)
    assert not bpffs.is_mounted(Path("/sys/fs"), mountinfo)


def test_pin_dir_needs_our_prefix_and_one_component(tmp_path: Path) -> None:
    assert bpffs.pin_dir("hm-sock-lb", tmp_path) == tmp_path / "hm-sock-lb"
    for bad in ("sock-lb", "hm-a/b", ".."):
        with pytest.raises(ValueError, match="must be one path component"):
            bpffs.pin_dir(bad, tmp_path)


def test_remove_pin_dir_empties_and_removes(tmp_path: Path) -> None:
    pins = tmp_path / "hm-pins"
    pins.mkdir()
    (pins / "services").write_text("")
    (pins / "link-connect4-7").write_text("")
    bpffs.remove_pin_dir(pins)
    assert not pins.exists()
    bpffs.remove_pin_dir(pins)  # gone already: nothing to do


def test_remove_pin_dir_refuses_other_directories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an hm-"):
        bpffs.remove_pin_dir(tmp_path)


def test_missing_object_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(BpfError) as info:
        BpfObject.open(tmp_path / "absent.bpf.o")
    assert "python -m hybridmesh.ebpf.build" in info.value.hint


def test_bpf_error_text_has_hint_and_libbpf_log() -> None:
    err = BpfError("load x.bpf.o: Permission denied (errno 13)", "the verifier rejected it",
                   13, "0: R1=ctx\ninvalid mem access")  # fmt: skip
    assert str(err) == (
        "load x.bpf.o: Permission denied (errno 13) (hint: the verifier rejected it)\n"
        "libbpf said:\n0: R1=ctx\ninvalid mem access"
    )
    assert str(BpfError("plain")) == "plain"
