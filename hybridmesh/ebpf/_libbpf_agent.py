"""libbpf bindings the node agent and the doctor need beyond :mod:`hybridmesh.ebpf._libbpf`.

Kept apart (own CDLL handle, so the prototypes set here can never disturb the shared ones):

- feature probes — ``libbpf_probe_bpf_prog_type`` / ``libbpf_probe_bpf_map_type`` load a tiny
  program or create a tiny map for real, which is the only honest answer to "does this kernel
  have X" (config files and version numbers lie under backports and lockdown);
- ``bpf_obj_get_info_by_fd`` for a pinned map's size, which ``ebpf status`` reports.
"""

from __future__ import annotations

import ctypes
import functools
import os
from ctypes import c_int, c_uint32, c_void_p
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridmesh.ebpf._libbpf import LIBBPF, _check, obj_get
from hybridmesh.ebpf.errors import BpfError

__all__ = ["MAP_TYPES", "PROG_TYPES", "MapInfo", "map_info", "pinned_map_info", "probe_map_type",
           "probe_prog_type", "prototype"]  # fmt: skip

PROG_TYPES: dict[str, int] = {
    "tracepoint": 5,
    "cgroup_skb": 8,
    "sock_ops": 13,
    "sk_msg": 16,
    "cgroup_sock_addr": 18,
    "sk_lookup": 30,
}
"""``enum bpf_prog_type`` values (uapi, stable) of every program type hybridmesh loads."""

MAP_TYPES: dict[str, int] = {
    "hash": 1,
    "array": 2,
    "percpu_array": 6,
    "lru_hash": 9,
    "lpm_trie": 11,
    "sockmap": 15,
    "sockhash": 18,
    "sk_storage": 24,
    "ringbuf": 27,
}
"""``enum bpf_map_type`` values (uapi, stable) of every map type hybridmesh creates."""


def prototype(lib: Any) -> Any:
    """Set the prototypes used here on a libbpf handle (ours, or one a caller opened)."""
    lib.libbpf_probe_bpf_prog_type.restype = c_int
    lib.libbpf_probe_bpf_prog_type.argtypes = [c_int, c_void_p]
    lib.libbpf_probe_bpf_map_type.restype = c_int
    lib.libbpf_probe_bpf_map_type.argtypes = [c_int, c_void_p]
    lib.bpf_obj_get_info_by_fd.restype = c_int
    lib.bpf_obj_get_info_by_fd.argtypes = [c_int, c_void_p, ctypes.POINTER(c_uint32)]
    return lib


@functools.cache
def _lib() -> Any:
    try:
        return prototype(ctypes.CDLL(LIBBPF, use_errno=True))
    except OSError as exc:
        raise BpfError(f"cannot load {LIBBPF}: {exc}", "run ./run setup (libbpf1)") from exc


def _probe(result: int, what: str) -> bool:
    if result < 0:
        _check(result, f"probe {what}")
    return result == 1


def probe_prog_type(name: str, lib: Any = None) -> bool:
    """True if the kernel loads a program of this type (:data:`PROG_TYPES` key).

    ``lib``: a libbpf handle already passed through :func:`prototype` (the doctor's, so its
    tests can fake it); :class:`BpfError` when the probe itself cannot run (no privilege).
    """
    fn = (lib or _lib()).libbpf_probe_bpf_prog_type
    return _probe(fn(PROG_TYPES[name], None), f"program type {name}")


def probe_map_type(name: str, lib: Any = None) -> bool:
    """True if the kernel creates a map of this type (:data:`MAP_TYPES` key)."""
    fn = (lib or _lib()).libbpf_probe_bpf_map_type
    return _probe(fn(MAP_TYPES[name], None), f"map type {name}")


class _BpfMapInfo(ctypes.Structure):
    """The head of ``struct bpf_map_info``; the kernel fills what fits."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", ctypes.c_char * 16),
    ]


@dataclass(frozen=True, slots=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    name: str


def map_info(fd: int) -> MapInfo:
    info = _BpfMapInfo()
    size = c_uint32(ctypes.sizeof(info))
    _check(_lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "map info")
    return MapInfo(info.type, info.id, info.key_size, info.value_size, info.max_entries,
                   info.name.decode(errors="replace"))  # fmt: skip


def pinned_map_info(path: Path) -> MapInfo:
    fd = obj_get(path)
    try:
        return map_info(fd)
    finally:
        os.close(fd)
