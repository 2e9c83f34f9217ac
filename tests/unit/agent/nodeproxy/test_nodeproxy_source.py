"""Source resolution: the kernel's record (cgroup) decides, never the source address."""

from __future__ import annotations

import os
from pathlib import Path

from hybridmesh.agent.nodeproxy.source import (
    KEY,
    VALUE,
    CgroupIndex,
    TableSourceResolver,
    pack_key,
    pack_value,
    unpack_value,
)

PROXY = ("10.244.1.1", 15001)


def resolver(tmp_path: Path, *pods: str) -> tuple[TableSourceResolver, dict[str, int]]:
    dirs = {}
    for key in pods:
        path = tmp_path / key.replace("/", ".")
        path.mkdir()
        dirs[key] = path
    index = CgroupIndex()
    index.set_pods(dirs)
    return TableSourceResolver(index), {k: os.stat(p).st_ino for k, p in dirs.items()}


def test_layout_is_network_order_as_the_bpf_program_writes_it() -> None:
    assert (KEY.size, VALUE.size) == (12, 16)
    key = pack_key(("10.0.0.1", 0x1234), ("10.0.0.2", 15001))
    assert key == bytes([10, 0, 0, 1, 10, 0, 0, 2, 0x12, 0x34, 0x3A, 0x99])
    raw = pack_value(7, ("10.96.0.10", 80))
    assert raw[8:14] == bytes([10, 96, 0, 10, 0, 80])
    assert unpack_value(raw) == (7, ("10.96.0.10", 80))


def test_entry_resolves_to_the_cgroups_pod_once(tmp_path: Path) -> None:
    res, ids = resolver(tmp_path, "shop/web-0")
    res.record(("10.244.1.5", 40000), PROXY, ids["shop/web-0"], ("10.96.0.10", 80))
    steered = res.resolve(("10.244.1.5", 40000), PROXY)
    assert steered is not None
    assert (steered.pod, steered.destination) == ("shop/web-0", ("10.96.0.10", 80))
    assert res.resolve(("10.244.1.5", 40000), PROXY) is None  # read once


def test_no_entry_unknown_cgroup_or_conflict_marker_fails_closed(tmp_path: Path) -> None:
    res, _ids = resolver(tmp_path, "shop/web-0")
    assert res.resolve(("10.244.1.5", 1), PROXY) is None
    res.record(("10.244.1.5", 2), PROXY, 999_999_999, ("10.96.0.10", 80))
    assert res.resolve(("10.244.1.5", 2), PROXY) is None
    res.record(("10.244.1.5", 3), PROXY, 0, ("10.96.0.10", 80))  # sockops: 4-tuple collision
    assert res.resolve(("10.244.1.5", 3), PROXY) is None


def test_forged_source_address_resolves_to_the_real_creator(tmp_path: Path) -> None:
    res, ids = resolver(tmp_path, "shop/web-0", "shop/evil-0")
    web_ip = "10.244.1.5"  # evil-0 binds web-0's address; its socket's cgroup is still evil's
    res.record((web_ip, 41000), PROXY, ids["shop/evil-0"], ("10.96.0.20", 5432))
    steered = res.resolve((web_ip, 41000), PROXY)
    assert steered is not None and steered.pod == "shop/evil-0"


def test_index_follows_pods_leaving(tmp_path: Path) -> None:
    res, ids = resolver(tmp_path, "shop/web-0")
    res.index.set_pods({})
    res.record(("10.244.1.5", 4), PROXY, ids["shop/web-0"], ("10.96.0.10", 80))
    assert res.resolve(("10.244.1.5", 4), PROXY) is None
    assert len(res.index) == 0
