"""Steering for the ``node`` placement: the loader of ``bpf/nodesteer.bpf.c``.

Attached to each local ``node`` pod's cgroup, the programs send every TCP connect to a
non-loopback destination to the node proxy's outbound listener, and leave in the pinned
``hm_node_src`` hash, under the connection's 4-tuple as the proxy's accept() sees it, the
calling pod's cgroup id and the destination the application asked for. The proxy
(:mod:`hybridmesh.agent.nodeproxy.source`) reads and deletes that entry: identity comes from
the cgroup the kernel ran ``connect()`` in, not from a source address the pod could forge.

The pod is the *registered* cgroup (:meth:`NodeSteer.attach` writes it into ``pod_cgroups``)
that contains the caller: the lab runs a pod's processes in leaves (``app``) below it.

Restart (agent upgrade), as for :mod:`hybridmesh.ebpf.sock_lb`::

    ns = NodeSteer.load(pin_dir, proxy)   # maps reused from the pins (hm_node_src with entries
                                          # the proxy has not read yet, the per-socket state of
                                          # connections in flight); every pinned link is pointed
                                          # at the new programs atomically

``hm_node_src`` may have been pinned first by the node proxy (same type and sizes, no BTF), so
it is checked by size, and its ctypes mirrors against the object's BTF by struct name.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields
from ipaddress import IPv4Address
from pathlib import Path

from hybridmesh.ebpf import _libbpf, bpffs
from hybridmesh.ebpf._libbpf import BpfObject
from hybridmesh.ebpf._links import (
    ProgramStats,
    program_ids,
    program_stats,
    rebind_pinned_links,
    sum_per_cpu,
)
from hybridmesh.ebpf.btf import BtfKind, check_layout
from hybridmesh.ebpf.build import BPF_DIR
from hybridmesh.ebpf.errors import BpfError, BtfLayoutError
from hybridmesh.ebpf.maps import Map, PerCpuMap
from hybridmesh.ebpf.sock_lb import _cgroup_id, _detach_pin, _replace_program

__all__ = [
    "MAX_PODS",
    "MAX_SRC",
    "OBJECT",
    "SRC_MAP",
    "Counters",
    "NodeSteer",
    "NodeSteerStats",
    "SrcEntry",
    "SrcKey",
    "SrcValue",
    "entry_of",
    "src_key",
]

OBJECT = BPF_DIR / "nodesteer.bpf.o"
SRC_MAP = "hm_node_src"
MAX_SRC = 65536  # HM_NS_MAX_SRC
MAX_PODS = 4096  # HM_NS_MAX_PODS
MAPS = (SRC_MAP, "steer_state", "pod_cgroups", "stats")
PROGRAMS = {
    "connect4": "hm_ns_connect4",
    "connect6": "hm_ns_connect6",  # AF_INET6 sockets dialling v4-mapped addresses
    "getpeername4": "hm_ns_getpeername4",
    "getpeername6": "hm_ns_getpeername6",
    "sockops": "hm_ns_sockops",
}
_ATTACH_ORDER = ("sockops", "getpeername4", "getpeername6", "connect4", "connect6")
Addr = tuple[IPv4Address, int]


# --- mirrors of bpf/nodesteer.h ---------------------------------------------------------------


class SrcKey(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
    ]


class SrcValue(ctypes.Structure):
    _fields_ = [
        ("cgroup_id", ctypes.c_uint64),
        ("orig_daddr", ctypes.c_uint32),
        ("orig_dport", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


_COUNTERS = ("steered", "unknown_pod", "no_storage", "established", "conflicts",
             "insert_failed", "closed")  # fmt: skip


class NodeSteerStats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in _COUNTERS]


# --- pure translation -------------------------------------------------------------------------


def _net32(ip: IPv4Address) -> int:
    """The u32 whose in-memory bytes are the address in network order."""
    return int.from_bytes(ip.packed, sys.byteorder)


def _net16(port: int) -> int:
    if not isinstance(port, int) or not 0 < port <= 0xFFFF:
        raise ValueError(f"port {port!r} is not in 1..65535")
    return int.from_bytes(port.to_bytes(2, "big"), sys.byteorder)


def _ip_of(net32: int) -> IPv4Address:
    return IPv4Address(net32.to_bytes(4, sys.byteorder))


def _port_of(net16: int) -> int:
    return int.from_bytes(net16.to_bytes(2, sys.byteorder), "big")


@dataclass(frozen=True)
class SrcEntry:
    """One ``hm_node_src`` entry: a steered connection the proxy has not accepted yet."""

    peer: Addr  # the pod's end (source address as bound: not trusted)
    local: Addr  # the proxy's listener
    cgroup_id: int  # the calling pod's cgroup; 0 = conflicting claims, refused
    destination: Addr  # what the application dialled


def src_key(peer: tuple[IPv4Address | str, int], local: tuple[IPv4Address | str, int]) -> SrcKey:
    """The key of a connection seen from the proxy (peer = the pod's side)."""
    return SrcKey(_net32(IPv4Address(peer[0])), _net32(IPv4Address(local[0])),
                  _net16(peer[1]), _net16(local[1]))  # fmt: skip


def entry_of(key: SrcKey, value: SrcValue) -> SrcEntry:
    return SrcEntry(
        (_ip_of(key.saddr), _port_of(key.sport)),
        (_ip_of(key.daddr), _port_of(key.dport)),
        value.cgroup_id,
        (_ip_of(value.orig_daddr), _port_of(value.orig_dport)),
    )


@dataclass(frozen=True)
class Counters:
    """The datapath's counters, summed over CPUs (see ``struct hm_nodesteer_stats``)."""

    steered: int = 0
    unknown_pod: int = 0
    no_storage: int = 0
    established: int = 0
    conflicts: int = 0
    insert_failed: int = 0
    closed: int = 0

    def to_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --- the loaded programs ----------------------------------------------------------------------


class _SrcMap:
    """``hm_node_src`` by fd: sizes checked on the map itself (it may be the proxy's), the
    mirrors checked against our BTF by struct name."""

    def __init__(self, obj: BpfObject) -> None:
        bpf_map = obj.map(SRC_MAP)
        sizes = (bpf_map.key_size, bpf_map.value_size)
        if sizes != (ctypes.sizeof(SrcKey), ctypes.sizeof(SrcValue)):
            raise BtfLayoutError(
                f"{SRC_MAP}: key/value are {sizes[0]}/{sizes[1]} bytes, expected "
                f"{ctypes.sizeof(SrcKey)}/{ctypes.sizeof(SrcValue)}",
                "remove the stale pin (hybridmesh lab down) so the map is created afresh",
            )
        btf = obj.btf
        check_layout(SrcKey, btf, btf.find("hm_node_src_key", BtfKind.STRUCT), f"{SRC_MAP} key")
        check_layout(SrcValue, btf, btf.find("hm_node_src", BtfKind.STRUCT), f"{SRC_MAP} value")
        self.fd = bpf_map.fd
        self._map = bpf_map

    def keys(self) -> Iterator[SrcKey]:
        prev: SrcKey | None = None
        while True:
            nxt = SrcKey()
            if not _libbpf.map_next_key(self.fd, prev, nxt):
                return
            yield nxt
            prev = nxt

    def lookup(self, key: SrcKey) -> SrcValue | None:
        value = SrcValue()
        return value if _libbpf.map_lookup(self.fd, key, value) else None


class NodeSteer:
    """The loaded nodesteer object, its maps and its pinned cgroup links."""

    def __init__(self, obj: BpfObject, pin_dir: Path, proxy: Addr) -> None:
        self.pin_dir = pin_dir
        self.proxy = proxy
        self._obj = obj
        self.src_map = _SrcMap(obj)
        self.pods_map = Map(obj.map("pod_cgroups"), ctypes.c_uint64, ctypes.c_uint8)
        self.stats_map = PerCpuMap(obj.map("stats"), ctypes.c_uint32, NodeSteerStats)
        self.programs = {hook: obj.program(name) for hook, name in PROGRAMS.items()}

    @classmethod
    def load(
        cls, pin_dir: Path, proxy: tuple[IPv4Address | str, int], obj_path: Path = OBJECT
    ) -> NodeSteer:
        """Load with the proxy's outbound listener ``proxy`` (ip, port) compiled in, reusing the
        maps pinned in ``pin_dir`` and re-binding every pinned link to the new programs."""
        address = (IPv4Address(proxy[0]), proxy[1])
        bpffs.ensure_mounted()
        bpffs.pin_dir(pin_dir.name, pin_dir.parent)  # validates the hm- prefix
        pin_dir.mkdir(mode=0o700, exist_ok=True)
        obj = BpfObject.open(obj_path)
        try:
            obj.set_rodata("proxy_ip4", ctypes.c_uint32(_net32(address[0])))
            obj.set_rodata("proxy_port", ctypes.c_uint16(_net16(address[1])))
            for name in MAPS:
                obj.map(name).set_pin_path(pin_dir / name)
            obj.load()
            ns = cls(obj, pin_dir, address)
            rebind_pinned_links(pin_dir, ns.programs)
        except BaseException:
            obj.close()
            raise
        return ns

    # links -------------------------------------------------------------------------------

    def attach(self, cgroup: Path) -> None:
        """Steer connects from ``cgroup`` (a pod's cgroup v2 directory) and its descendants.

        The cgroup is registered as a pod first, so the first connect already finds it; sockops
        goes before the connect hooks, so every steered socket gets its entry. Idempotent.
        """
        cgid = _cgroup_id(cgroup)
        self.pods_map.update(ctypes.c_uint64(cgid), ctypes.c_uint8(1))
        for hook in _ATTACH_ORDER:
            pin = self.pin_dir / f"link-{hook}-{cgid}"
            if pin.exists() and _replace_program(pin, self.programs[hook]):
                continue
            link = self.programs[hook].attach_cgroup(cgroup)
            try:
                link.pin(pin)
            except BpfError:
                link.detach()
                raise
            finally:
                link.destroy()

    def attached(self) -> list[int]:
        """Cgroup ids (inode numbers) with a pinned connect4 link."""
        return sorted(int(p.name.rsplit("-", 1)[1]) for p in self.pin_dir.glob("link-connect4-*"))

    def detach(self, cgroup: Path | int | None = None) -> None:
        """Stop steering ``cgroup`` (a path or cgroup id; every cgroup when None).

        The connect hooks go first, so no connect is steered without its sockops; connections
        already steered keep working (the proxy has, or will get, their entries).
        """
        cgid = _cgroup_id(cgroup) if isinstance(cgroup, Path) else cgroup
        suffix = str(cgid) if cgid is not None else "*"
        for hook in reversed(_ATTACH_ORDER):
            for pin in sorted(self.pin_dir.glob(f"link-{hook}-{suffix}")):
                _detach_pin(pin)
        for pod in [cgid] if cgid is not None else self.pod_cgroups():
            self.pods_map.delete(ctypes.c_uint64(pod))

    def pod_cgroups(self) -> set[int]:
        present = self.pods_map.keys()  # a generator over the map, not a dict view
        return {k.value for k in present}

    # entries, counters -------------------------------------------------------------------

    def entries(self) -> list[SrcEntry]:
        """Every connection steered and established that the proxy has not read yet."""
        found = ((k, self.src_map.lookup(k)) for k in list(self.src_map.keys()))
        return [entry_of(k, v) for k, v in found if v is not None]

    def counters(self) -> Counters:
        return sum_per_cpu(self.stats_map.lookup(ctypes.c_uint32(0)), Counters)

    def program_stats(self) -> dict[str, ProgramStats]:
        return program_stats(self.programs)

    def program_ids(self) -> dict[str, int]:
        return program_ids(self.programs)

    # lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release our fds. Pins stay: steering goes on without us."""
        self._obj.close()

    def __enter__(self) -> NodeSteer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def remove(pin_dir: Path) -> None:
        """Detach every pinned link and remove every pin in ``pin_dir`` (a cold start).

        A node proxy that still holds ``hm_node_src`` open keeps reading its (now orphan) map:
        restart it after a cold start so it opens the new pin.
        """
        if pin_dir.exists():
            for pin in sorted(pin_dir.glob("link-*")):
                _detach_pin(pin)
        bpffs.remove_pin_dir(pin_dir)
