"""Who is calling: the source pod of a steered connection, from the kernel, never from its IP.

The node proxy serves many pods, so "which pod opened this connection" is *the* security
question (the confused-deputy critique of per-node proxies). The packet's source address
cannot answer it: a pod can bind another pod's IP. The answer comes from the socket's creator:

- the agent's ``cgroup/connect4`` program runs in the connecting process's context, rewrites the
  destination to this proxy's outbound listener and remembers, per socket, the caller's cgroup
  id and the original destination;
- its ``sockops`` program, at ``ACTIVE_ESTABLISHED`` (the 4-tuple is now final), writes
  ``hm_node_src[{saddr, daddr, sport, dport}] = {cgroup_id, orig_daddr, orig_dport}``;
- here, the accepted socket's 4-tuple (peer → local) is the same key: look it up, map the
  cgroup id to the pod whose cgroup it is, and delete the entry (read once).

No entry, an unknown cgroup, or a conflicting entry (cgroup id 0) → None → the connection is
refused (fail closed). See docs/node.md for the kernel side and the spoofing argument.

:class:`BpfSourceResolver` reads the pinned map; :class:`TableSourceResolver` is the same logic
over a dict, the test double.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from hybridmesh.ebpf import bpffs

__all__ = [
    "MAP_NAME",
    "Addr",
    "BpfSourceResolver",
    "CgroupIndex",
    "SourceResolver",
    "Steered",
    "TableSourceResolver",
    "map_pin",
    "pack_key",
    "pack_value",
    "record_entry",
    "unpack_value",
]

MAP_NAME: Final = "hm_node_src"
KEY: Final = struct.Struct("!4s4sHH")  # saddr, daddr, sport, dport — all network order
VALUE: Final = struct.Struct("=Q4s2sH")  # cgroup_id (host order), orig_daddr, orig_dport (both
# network order), pad
Addr = tuple[str, int]


def map_pin(node: str) -> Path:
    """``<bpffs>/hm-<node>-nodesteer/hm_node_src``: where the agent pins the map."""
    return bpffs.pin_dir(f"hm-{node}-nodesteer") / MAP_NAME


@dataclass(frozen=True, slots=True)
class Steered:
    """A resolved connection: the calling pod (``ns/name``) and where it wanted to go."""

    pod: str
    destination: Addr
    cgroup_id: int


class SourceResolver(Protocol):
    """Resolves an accepted connection (its peer and local address) to its source pod."""

    def resolve(self, peer: Addr, local: Addr) -> Steered | None: ...


def pack_key(peer: Addr, local: Addr) -> bytes:
    """The map key of a connection seen from the proxy (peer = the pod's side)."""
    return KEY.pack(socket.inet_aton(peer[0]), socket.inet_aton(local[0]), peer[1], local[1])


def pack_value(cgroup_id: int, destination: Addr) -> bytes:
    """A map value, as the sockops program writes it (tests and the double use this)."""
    return VALUE.pack(cgroup_id, socket.inet_aton(destination[0]),
                      destination[1].to_bytes(2, "big"), 0)


def unpack_value(raw: bytes) -> tuple[int, Addr]:
    cgroup_id, daddr, dport, _pad = VALUE.unpack(raw)
    return cgroup_id, (socket.inet_ntoa(daddr), int.from_bytes(dport, "big"))


class CgroupIndex:
    """cgroup id (the inode of a cgroup v2 directory) → pod key, for this node's pods.

    ``set_pods`` is called on every snapshot with each local pod's cgroup directory; ids are
    read once per pod (a stat), so a lookup is a dict hit.
    """

    def __init__(self) -> None:
        self._by_id: dict[int, str] = {}
        self._paths: dict[str, tuple[Path, int]] = {}

    def set_pods(self, pods: Mapping[str, Path]) -> None:
        paths: dict[str, tuple[Path, int]] = {}
        for key, path in pods.items():
            known = self._paths.get(key)
            if known is not None and known[0] == path:
                paths[key] = known
                continue
            try:
                paths[key] = (path, os.stat(path).st_ino)
            except OSError:
                continue  # not created yet: the next snapshot retries
        self._paths = paths
        self._by_id = {ino: key for key, (_, ino) in paths.items()}

    def pod(self, cgroup_id: int) -> str | None:
        return self._by_id.get(cgroup_id)

    def __len__(self) -> int:
        return len(self._by_id)


class _Table(Protocol):
    def take(self, key: bytes) -> bytes | None: ...


def _resolve(table: _Table, index: CgroupIndex, peer: Addr, local: Addr) -> Steered | None:
    try:
        raw = table.take(pack_key(peer, local))
    except OSError:
        return None
    if raw is None:
        return None
    cgroup_id, destination = unpack_value(raw)
    pod = index.pod(cgroup_id) if cgroup_id else None
    return Steered(pod, destination, cgroup_id) if pod is not None else None


class TableSourceResolver:
    """The test double: the same lookup over a dict the test fills like the kernel would."""

    def __init__(self, index: CgroupIndex | None = None) -> None:
        self.index = index if index is not None else CgroupIndex()
        self.entries: dict[bytes, bytes] = {}

    def record(self, peer: Addr, local: Addr, cgroup_id: int, destination: Addr) -> None:
        """What sockops does at ACTIVE_ESTABLISHED."""
        self.entries[pack_key(peer, local)] = pack_value(cgroup_id, destination)

    def take(self, key: bytes) -> bytes | None:
        return self.entries.pop(key, None)

    def resolve(self, peer: Addr, local: Addr) -> Steered | None:
        return _resolve(self, self.index, peer, local)


class BpfSourceResolver:
    """Reads (and deletes) entries of the pinned ``hm_node_src`` hash."""

    def __init__(self, pin: Path, index: CgroupIndex | None = None,
                 open_pin: Callable[[Path], int] | None = None) -> None:
        from hybridmesh.ebpf import _libbpf

        self.index = index if index is not None else CgroupIndex()
        self._lib = _libbpf
        self._fd = (open_pin or _libbpf.obj_get)(pin)
        self._key = (ctypes.c_ubyte * KEY.size)()
        self._value = (ctypes.c_ubyte * VALUE.size)()

    def take(self, key: bytes) -> bytes | None:
        ctypes.memmove(self._key, key, KEY.size)
        if not self._lib.map_lookup(self._fd, self._key, self._value):
            return None
        self._lib.map_delete(self._fd, self._key)
        return bytes(self._value)

    def resolve(self, peer: Addr, local: Addr) -> Steered | None:
        from hybridmesh.ebpf.errors import BpfError

        try:
            return _resolve(self, self.index, peer, local)
        except BpfError:
            return None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def record_entry(fd: int, peer: Addr, local: Addr, cgroup_id: int, destination: Addr) -> None:
    """Write one entry into a real map by fd, as sockops would (tests, tools)."""
    from hybridmesh.ebpf import _libbpf

    key = (ctypes.c_ubyte * KEY.size).from_buffer_copy(pack_key(peer, local))
    value = (ctypes.c_ubyte * VALUE.size).from_buffer_copy(pack_value(cgroup_id, destination))
    _libbpf.map_update(fd, key, value)
