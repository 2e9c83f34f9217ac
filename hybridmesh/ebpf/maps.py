"""Typed access to a loaded map: ``Map[K, V]`` over ctypes types, checked against BTF.

The constructor compares the key and value types with the BTF the compiler recorded for the
map (:func:`hybridmesh.ebpf.btf.check_layout`) and refuses a mismatch, so a struct edited on
one side only fails at load time with a sentence naming the field — not later as garbage in
the datapath.
"""

from __future__ import annotations

import ctypes
import enum
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from hybridmesh.ebpf import _libbpf
from hybridmesh.ebpf.btf import check_layout
from hybridmesh.ebpf.errors import BtfLayoutError

if TYPE_CHECKING:
    from ctypes import _CData

__all__ = ["Map", "PerCpuMap", "UpdateFlag"]

K = TypeVar("K", bound="_CData")
V = TypeVar("V", bound="_CData")

_PERCPU_TYPES = frozenset({5, 6, 10})  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH


class UpdateFlag(enum.IntEnum):
    """BPF_ANY / BPF_NOEXIST / BPF_EXIST."""

    ANY = 0
    NOEXIST = 1
    EXIST = 2


def _check_types(bpf_map: _libbpf.BpfMap, key: type[_CData], value: type[_CData]) -> None:
    if ctypes.sizeof(key) != bpf_map.key_size or ctypes.sizeof(value) != bpf_map.value_size:
        raise BtfLayoutError(
            f"map {bpf_map.name}: key/value are {bpf_map.key_size}/{bpf_map.value_size} bytes, "
            f"{key.__name__}/{value.__name__} are {ctypes.sizeof(key)}/{ctypes.sizeof(value)}",
            "update the ctypes mirror to the C header it copies",
        )
    btf = bpf_map.object.btf
    check_layout(key, btf, bpf_map.btf_key_type_id, f"map {bpf_map.name} key")
    check_layout(value, btf, bpf_map.btf_value_type_id, f"map {bpf_map.name} value")


class _TypedMap(Generic[K, V]):
    def __init__(self, bpf_map: _libbpf.BpfMap, key: type[K], value: type[V]) -> None:
        _check_types(bpf_map, key, value)
        self.name = bpf_map.name
        self._map = bpf_map  # keeps the object, hence the fd, alive
        self._fd = bpf_map.fd
        self._key = key
        self._value = value

    def delete(self, key: K) -> bool:
        """False when the key was not there."""
        return _libbpf.map_delete(self._fd, key)

    def keys(self) -> Iterator[K]:
        """Every key. Entries added or removed meanwhile may or may not be seen (as in C)."""
        prev: K | None = None
        while True:
            nxt = self._key()
            if not _libbpf.map_next_key(self._fd, prev, nxt):
                return
            yield nxt
            prev = nxt

    def __contains__(self, key: K) -> bool:
        return _libbpf.map_lookup(self._fd, key, self._value_buffer())

    def _value_buffer(self) -> _CData:
        return self._value()


class Map(_TypedMap[K, V]):
    """A hash/array/LRU map with one value per key."""

    def __init__(self, bpf_map: _libbpf.BpfMap, key: type[K], value: type[V]) -> None:
        if bpf_map.type in _PERCPU_TYPES:
            raise TypeError(f"map {bpf_map.name} is per-CPU: use PerCpuMap")
        super().__init__(bpf_map, key, value)

    def update(self, key: K, value: V, flags: UpdateFlag = UpdateFlag.ANY) -> None:
        _libbpf.map_update(self._fd, key, value, flags)

    def lookup(self, key: K) -> V | None:
        value = self._value()
        return value if _libbpf.map_lookup(self._fd, key, value) else None

    def items(self) -> Iterator[tuple[K, V]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:  # deleted between next_key and lookup
                yield key, value


class PerCpuMap(_TypedMap[K, V]):
    """A per-CPU map: one value per possible CPU, each 8-byte aligned in the kernel's buffer."""

    def __init__(self, bpf_map: _libbpf.BpfMap, key: type[K], value: type[V]) -> None:
        if bpf_map.type not in _PERCPU_TYPES:
            raise TypeError(f"map {bpf_map.name} is not per-CPU: use Map")
        super().__init__(bpf_map, key, value)
        self.ncpus = _libbpf.num_possible_cpus()
        self._stride = (ctypes.sizeof(value) + 7) // 8 * 8

    def _buffer(self) -> ctypes.Array[ctypes.c_char]:
        return ctypes.create_string_buffer(self._stride * self.ncpus)

    def lookup(self, key: K) -> list[V] | None:
        """One value per CPU, or None when the key is absent."""
        buf = self._buffer()
        if not _libbpf.map_lookup(self._fd, key, buf):
            return None
        return [self._copy_out(buf, i * self._stride) for i in range(self.ncpus)]

    def _copy_out(self, buf: ctypes.Array[ctypes.c_char], offset: int) -> V:
        value = self._value()
        size = ctypes.sizeof(value)
        ctypes.memmove(ctypes.addressof(value), ctypes.addressof(buf) + offset, size)
        return value

    def _value_buffer(self) -> _CData:
        return self._buffer()

    def update(self, key: K, values: Sequence[V], flags: UpdateFlag = UpdateFlag.ANY) -> None:
        """Write one value per CPU (``len(values) == ncpus``)."""
        if len(values) != self.ncpus:
            raise ValueError(f"map {self.name}: {len(values)} values for {self.ncpus} CPUs")
        buf = self._buffer()
        for i, value in enumerate(values):
            ctypes.memmove(
                ctypes.addressof(buf) + i * self._stride,
                ctypes.addressof(value),
                ctypes.sizeof(value),
            )
        _libbpf.map_update(self._fd, key, buf, flags)

    def update_all(self, key: K, value: V, flags: UpdateFlag = UpdateFlag.ANY) -> None:
        """The same value on every CPU (e.g. zeroes to reset counters)."""
        self.update(key, [value] * self.ncpus, flags)

    def items(self) -> Iterator[tuple[K, list[V]]]:
        for key in self.keys():
            values = self.lookup(key)
            if values is not None:
                yield key, values
