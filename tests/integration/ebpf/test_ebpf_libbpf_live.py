"""The libbpf binding against the real kernel: load errors, typed maps, BTF checks, bpffs."""

from __future__ import annotations

import ctypes
import errno
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf._libbpf import BpfObject, Btf, ProgInfo
from hybridmesh.ebpf.btf import BtfKind, size_of
from hybridmesh.ebpf.build import BPF_DIR, clang_command
from hybridmesh.ebpf.errors import BpfError, BtfLayoutError
from hybridmesh.ebpf.maps import Map, PerCpuMap, UpdateFlag
from hybridmesh.ebpf.sock_lb import OBJECT, SockLB, Svc, SvcKey, SvcStats

pytestmark = pytest.mark.privileged

UNCHECKED_DEREF = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("cgroup/connect4")
int hm_bad(struct bpf_sock_addr *ctx)
{
	__u32 key = 0;
	__u64 *n = bpf_map_lookup_elem(&counts, &key);
	return *n > 0; /* no NULL check: the verifier must refuse this */
}
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture
def loaded(built: None) -> Iterator[BpfObject]:
    """sock_lb loaded without pins (its maps die with the object)."""
    with BpfObject.open(OBJECT) as obj:
        obj.load()
        yield obj


def test_verifier_rejection_carries_its_log(tmp_path: Path, built: None,
                                            caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    source = tmp_path / "hm_bad.bpf.c"
    source.write_text(UNCHECKED_DEREF)
    subprocess.run([*clang_command("clang", source), f"-I{BPF_DIR}"], check=True)
    with BpfObject.open(source.with_suffix(".o")) as obj, pytest.raises(BpfError) as info:
        obj.load()
    assert info.value.errno == errno.EACCES
    assert "verifier rejected" in info.value.hint
    assert "invalid mem access 'map_value_or_null'" in info.value.log
    libbpf_said = [r.getMessage() for r in caplog.records if r.name == "hybridmesh.ebpf.libbpf"]
    assert any("map_value_or_null" in m for m in libbpf_said)
    assert all(r.levelno >= logging.INFO for r in caplog.records if "BEGIN PROG LOAD" in r.msg)


def test_map_round_trip(loaded: BpfObject) -> None:
    services = Map(loaded.map("services"), SvcKey, Svc)
    key = SvcKey(1, 2, 6, 0)
    assert services.lookup(key) is None
    assert key not in services
    services.update(key, Svc(7, 3))
    with pytest.raises(BpfError) as info:
        services.update(key, Svc(8, 1), UpdateFlag.NOEXIST)
    assert info.value.errno == errno.EEXIST
    got = services.lookup(key)
    assert got is not None and (got.id, got.count) == (7, 3)
    assert [(bytes(k), v.id) for k, v in services.items()] == [(bytes(key), 7)]
    assert services.delete(key)
    assert not services.delete(key)
    assert list(services.keys()) == []


def test_per_cpu_map_round_trip(loaded: BpfObject) -> None:
    stats = PerCpuMap(loaded.map("stats"), ctypes.c_uint32, SvcStats)
    values = [SvcStats(cpu, 10 * cpu) for cpu in range(stats.ncpus)]
    stats.update(ctypes.c_uint32(5), values)
    got = stats.lookup(ctypes.c_uint32(5))
    assert got is not None
    assert [(s.connects, s.no_backend) for s in got] == [(c, 10 * c) for c in range(stats.ncpus)]
    with pytest.raises(ValueError, match="CPUs"):
        stats.update(ctypes.c_uint32(5), values[:0])
    with pytest.raises(TypeError, match="PerCpuMap"):
        Map(loaded.map("stats"), ctypes.c_uint32, SvcStats)


class SwappedKey(ctypes.Structure):
    """SvcKey with port and proto in the wrong order: same size, wrong layout."""

    _fields_ = [
        ("vip", ctypes.c_uint32),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("port", ctypes.c_uint16),
    ]


def test_a_mirror_that_drifted_is_refused(loaded: BpfObject) -> None:
    with pytest.raises(BtfLayoutError) as info:
        Map(loaded.map("services"), SwappedKey, Svc)
    text = str(info.value)
    assert "map services key (struct hm_svc_key)" in text
    assert ".proto: offset 4 in Python, 6 in BTF" in text
    assert ".port: offset 6 in Python, 4 in BTF" in text
    with pytest.raises(BtfLayoutError, match="key/value are 8/8 bytes"):
        Map(loaded.map("services"), ctypes.c_uint32, Svc)


def test_rodata_is_only_writable_before_load(built: None) -> None:
    with BpfObject.open(OBJECT) as obj:
        with pytest.raises(BpfError, match="nope: absent"):
            obj.set_rodata("nope", ctypes.c_uint8(1))
        with pytest.raises(BpfError, match=r"1 bytes in sock_lb\.bpf\.o, 4 bytes given"):
            obj.set_rodata("lb_protocols", ctypes.c_uint32(1))
        obj.load()
        with pytest.raises(BpfError, match="read-only"):
            obj.set_rodata("lb_protocols", ctypes.c_uint8(3))


def test_an_incompatible_pinned_map_fails_with_a_hint(pin_dir: Path) -> None:
    pin_dir.mkdir()
    subprocess.run(
        ["bpftool", "map", "create", str(pin_dir / "services"), "type", "hash",
         "key", "8", "value", "4", "entries", "16", "name", "services"],
        check=True,
    )  # fmt: skip
    with pytest.raises(BpfError) as info:
        SockLB.load(pin_dir)
    assert "remove its pins" in info.value.hint
    assert "services" in info.value.log


def test_prog_info_mirror_matches_kernel_btf() -> None:
    """ProgInfo is a prefix of struct bpf_prog_info: every named field sits where BTF says."""
    btf = Btf.vmlinux()
    members = {m.name: m for m in btf.type_by_id(btf.find("bpf_prog_info", BtfKind.STRUCT)).members}
    for field in ProgInfo._fields_:
        name, ctype = field[0], field[1]
        if name.startswith("_"):
            continue
        assert members[name].bit_offset == getattr(ProgInfo, name).offset * 8, name
        assert size_of(btf, members[name].type_id) == ctypes.sizeof(ctype), name


def test_bpffs_is_mounted_or_mountable(tmp_path: Path) -> None:
    assert bpffs.is_mounted()
    assert not bpffs.ensure_mounted()
    target = tmp_path / "hm-bpffs"
    assert bpffs.ensure_mounted(target)
    try:
        assert bpffs.is_mounted(target)
    finally:
        subprocess.run(["umount", str(target)], check=True)
