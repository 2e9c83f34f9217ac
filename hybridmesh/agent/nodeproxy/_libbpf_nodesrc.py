"""The two libbpf calls the node proxy needs that ``ebpf/_libbpf.py`` lacks: create and pin a map.

Used to make ``hm_node_src`` when no steering program has pinned it yet (tests; an agent
whose steering program is not built yet). When the agent's ``nodesteer.bpf.c`` exists, its
object declares the map with ``LIBBPF_PIN_BY_NAME`` semantics (``BpfMap.set_pin_path``) and
reuses a map pinned by this helper, since key, value and type are the same.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Final

from hybridmesh.agent.nodeproxy.source import KEY, MAP_NAME, VALUE
from hybridmesh.ebpf._libbpf import _check, _lib

__all__ = ["BPF_MAP_TYPE_LRU_HASH", "create_source_map"]

BPF_MAP_TYPE_LRU_HASH: Final = 9
DEFAULT_ENTRIES: Final = 65536


def _prototypes() -> ctypes.CDLL:
    lib = _lib()
    lib.bpf_map_create.restype = ctypes.c_int
    lib.bpf_map_create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32,
                                   ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p]
    lib.bpf_obj_pin.restype = ctypes.c_int
    lib.bpf_obj_pin.argtypes = [ctypes.c_int, ctypes.c_char_p]
    return lib


def create_source_map(pin: Path, max_entries: int = DEFAULT_ENTRIES) -> int:
    """Create an LRU hash shaped like ``hm_node_src``, pin it at ``pin``; returns its fd."""
    lib = _prototypes()
    fd = _check(lib.bpf_map_create(BPF_MAP_TYPE_LRU_HASH, MAP_NAME.encode(), KEY.size,
                                   VALUE.size, max_entries, None), f"create map {MAP_NAME}")
    try:
        pin.parent.mkdir(parents=True, exist_ok=True)
        _check(lib.bpf_obj_pin(fd, os.fsencode(pin)), f"pin {MAP_NAME} at {pin}")
    except BaseException:
        os.close(fd)
        raise
    return fd
