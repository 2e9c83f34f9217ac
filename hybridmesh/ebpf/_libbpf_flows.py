"""libbpf calls the flows loader needs beyond :mod:`hybridmesh.ebpf._libbpf` (kept apart so
that module stays the one shared binding; these reuse its loaded library)."""

from __future__ import annotations

from ctypes import c_uint32, c_void_p

from hybridmesh.ebpf._libbpf import BpfMap, _lib

__all__ = ["max_entries"]


def max_entries(bpf_map: BpfMap) -> int:
    """The map's size as loaded (for a ring buffer: its bytes)."""
    fn = _lib().bpf_map__max_entries
    fn.restype, fn.argtypes = c_uint32, [c_void_p]
    return int(fn(bpf_map._ptr))
