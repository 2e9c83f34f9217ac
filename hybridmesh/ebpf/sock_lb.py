"""Socket-level service load balancing: the loader of ``bpf/sock_lb.bpf.c``.

``connect()`` from a process in an attached cgroup to a service VIP:port is rewritten, inside the
syscall, to a backend picked at random; ``getpeername()`` still reports the VIP. No packet is
ever NATed.

With no backend, ``connect()`` fails with ECONNREFUSED. What the kernel allows: a connect4
program only returns allow (1) or deny (0), and deny alone makes connect() fail with EPERM;
since 5.18 the program can choose the errno with ``bpf_set_retval(-ECONNREFUSED)`` before
denying (Cilium does the same). The refusal is synchronous — no SYN is sent, and a non-blocking
socket gets the error from connect() itself, not later through SO_ERROR as for a real RST.

State lives in maps pinned under ``<bpffs>/hm-*/`` and in pinned cgroup links, never only in
this process. The reuse path, for an agent restart or upgrade::

    lb = SockLB.load(pin_dir)   # maps: libbpf reuses the pinned services/backends/revnat/stats,
                                # so services, counters and live sockets' getpeername survive;
                                # links: every link pinned in pin_dir gets the freshly loaded
                                # program through bpf_link__update_program (atomic: no connect
                                # runs unbalanced in between)

A map whose definition changed incompatibly fails that load (libbpf's "couldn't reuse pinned
map"); :meth:`SockLB.remove` clears the pins for a cold start.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal

from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf._libbpf import BpfObject
from hybridmesh.ebpf._links import (
    CgroupLinks,
    ProgramStats,
    cgroup_id,
    detach_pin,
    prepare_pin_dirs,
    program_stats,
    remove_pins,
    replace_program,
)
from hybridmesh.ebpf.build import BPF_DIR
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.ebpf.maps import Map, PerCpuMap

__all__ = [
    "DEFAULT_PIN_DIR",
    "MAX_SERVICES",
    "OBJECT",
    "Backend",
    "BackendKey",
    "ProgramStats",
    "RevNat",
    "Service",
    "ServiceStats",
    "SockLB",
    "Svc",
    "SvcKey",
    "SvcStats",
    "allocate_id",
    "backend_value",
    "service_key",
    "service_of",
]

OBJECT = BPF_DIR / "sock_lb.bpf.o"
DEFAULT_PIN_DIR = bpffs.pin_dir("hm-sock-lb")
MAX_SERVICES = 4096  # HM_LB_MAX_SERVICES
PROGRAMS = {"connect4": "hm_connect4", "getpeername4": "hm_getpeername4"}
MAPS = ("services", "backends", "revnat", "stats")
Protocol = Literal["tcp", "udp"]
_PROTO_NUMBERS: dict[str, int] = {"tcp": 6, "udp": 17}
_PROTO_BITS: dict[str, int] = {"tcp": 1, "udp": 2}  # HM_LB_TCP, HM_LB_UDP


# --- mirrors of bpf/sock_lb.h (checked against the object's BTF by Map) ------------------------


class SvcKey(ctypes.Structure):
    _fields_ = [
        ("vip", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class Svc(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("count", ctypes.c_uint32)]


class BackendKey(ctypes.Structure):
    _fields_ = [("svc_id", ctypes.c_uint32), ("slot", ctypes.c_uint32)]


class Backend(ctypes.Structure):
    _fields_ = [("ip", ctypes.c_uint32), ("port", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class RevNat(ctypes.Structure):
    _fields_ = [
        ("vip", ctypes.c_uint32),
        ("backend_ip", ctypes.c_uint32),
        ("vport", ctypes.c_uint16),
        ("backend_port", ctypes.c_uint16),
    ]


class SvcStats(ctypes.Structure):
    _fields_ = [("connects", ctypes.c_uint64), ("no_backend", ctypes.c_uint64)]


# --- pure translation between Python values and map entries ---------------------------------


@dataclass(frozen=True, order=True)
class Service:
    """A service frontend: what a client connects to."""

    vip: IPv4Address
    port: int
    protocol: Protocol = "tcp"

    def __str__(self) -> str:
        return f"{self.vip}:{self.port}/{self.protocol}"


@dataclass(frozen=True)
class ServiceStats:
    connects: int
    """Connects sent to a backend."""
    no_backend: int
    """Connects refused because the service had no backend."""


def _net32(ip: IPv4Address) -> int:
    """The u32 whose in-memory bytes are the address in network order (as the kernel has it)."""
    return int.from_bytes(ip.packed, sys.byteorder)


def _net16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), sys.byteorder)


def _ip_of(net32: int) -> IPv4Address:
    return IPv4Address(net32.to_bytes(4, sys.byteorder))


def _port_of(net16: int) -> int:
    return int.from_bytes(net16.to_bytes(2, sys.byteorder), "big")


def _port(port: int, what: str) -> int:
    if not isinstance(port, int) or not 1 <= port <= 0xFFFF:
        raise ValueError(f"{what}: port {port!r} is not in 1..65535")
    return port


def _service(vip: IPv4Address | str, port: int, protocol: str) -> Service:
    if protocol not in _PROTO_NUMBERS:
        raise ValueError(f"protocol {protocol!r} is not one of {sorted(_PROTO_NUMBERS)}")
    proto: Protocol = "tcp" if protocol == "tcp" else "udp"
    return Service(IPv4Address(vip), _port(port, f"service {vip}"), proto)


def service_key(service: Service) -> SvcKey:
    return SvcKey(_net32(service.vip), _net16(service.port), _PROTO_NUMBERS[service.protocol], 0)


def service_of(key: SvcKey) -> Service:
    proto = next(name for name, number in _PROTO_NUMBERS.items() if number == key.proto)
    return _service(_ip_of(key.vip), _port_of(key.port), proto)


def backend_value(ip: IPv4Address | str, port: int) -> Backend:
    return Backend(_net32(IPv4Address(ip)), _net16(_port(port, f"backend {ip}")), 0)


def allocate_id(used: Iterable[int], limit: int = MAX_SERVICES) -> int:
    """The lowest free service id (ids are 1..limit-1: they index the stats array)."""
    taken = set(used)
    free = next((i for i in range(1, limit) if i not in taken), None)
    if free is None:
        raise BpfError(f"all {limit - 1} service ids are in use", "delete unused services")
    return free


# --- the loaded program -----------------------------------------------------------------------


class SockLB:
    """The loaded sock_lb object, its typed maps and its pinned cgroup links."""

    def __init__(self, obj: BpfObject, pin_dir: Path) -> None:
        self.pin_dir = pin_dir
        self._obj = obj
        self.services_map = Map(obj.map("services"), SvcKey, Svc)
        self.backends_map = Map(obj.map("backends"), BackendKey, Backend)
        self.revnat_map = Map(obj.map("revnat"), ctypes.c_uint64, RevNat)
        self.stats_map = PerCpuMap(obj.map("stats"), ctypes.c_uint32, SvcStats)
        self.programs = {hook: obj.program(name) for hook, name in PROGRAMS.items()}
        self.links = {hook: CgroupLinks(pin_dir, hook) for hook in PROGRAMS}

    @classmethod
    def load(
        cls,
        pin_dir: Path = DEFAULT_PIN_DIR,
        protocols: Sequence[Protocol] = ("tcp",),
        obj_path: Path = OBJECT,
    ) -> SockLB:
        """Load the programs, reusing maps pinned in ``pin_dir`` and re-binding pinned links."""
        bits = 0
        for protocol in protocols:
            if protocol not in _PROTO_BITS:
                raise ValueError(f"protocol {protocol!r} is not one of {sorted(_PROTO_BITS)}")
            bits |= _PROTO_BITS[protocol]
        prepare_pin_dirs(pin_dir)
        obj = BpfObject.open(obj_path)
        try:
            obj.set_rodata("lb_protocols", ctypes.c_uint8(bits))
            for name in MAPS:
                obj.map(name).set_pin_path(pin_dir / name)
            obj.load()
            lb = cls(obj, pin_dir)
            lb._rebind_links()
        except BaseException:
            obj.close()
            raise
        return lb

    # links -------------------------------------------------------------------------------

    def _rebind_links(self) -> None:
        for hook, program in self.programs.items():
            self.links[hook].rebind(program)

    def attach(self, cgroup: Path) -> None:
        """Balance connects from ``cgroup`` (a cgroup v2 directory) and its descendants.

        Idempotent: attaching again only refreshes the program on the existing pinned link.
        """
        for hook, program in self.programs.items():
            self.links[hook].attach(program, cgroup)

    def attached(self) -> list[int]:
        """Cgroup ids (inode numbers) with a pinned connect4 link."""
        return self.links["connect4"].attached()

    def detach(self, cgroup: Path | None = None) -> None:
        """Detach from ``cgroup`` (every cgroup when None) and unpin those links."""
        for links in self.links.values():
            links.detach(cgroup)

    # services ----------------------------------------------------------------------------

    def set_service(
        self,
        vip: IPv4Address | str,
        port: int,
        backends: Sequence[tuple[IPv4Address | str, int]],
        protocol: Protocol = "tcp",
    ) -> Service:
        """Create or replace a service. An empty ``backends`` makes connects fail ECONNREFUSED.

        Order matters for connects racing the update: slots are written before the count that
        exposes them, and surplus slots deleted only after the count shrank (the program falls
        back to slot 0 if it still picks one).
        """
        service = _service(vip, port, protocol)
        values = [backend_value(ip, p) for ip, p in backends]
        key = service_key(service)
        current = self.services_map.lookup(key)
        if current is None:
            svc_id, old_count = allocate_id(s.id for _, s in self.services_map.items()), 0
            self.stats_map.update_all(ctypes.c_uint32(svc_id), SvcStats())
        else:
            svc_id, old_count = current.id, current.count
        for slot, value in enumerate(values):
            self.backends_map.update(BackendKey(svc_id, slot), value)
        self.services_map.update(key, Svc(svc_id, len(values)))
        for slot in range(len(values), old_count):
            self.backends_map.delete(BackendKey(svc_id, slot))
        return service

    def delete_service(self, vip: IPv4Address | str, port: int, protocol: Protocol = "tcp") -> bool:
        """Stop balancing a VIP:port (connects then go to the VIP itself); False if absent."""
        key = service_key(_service(vip, port, protocol))
        current = self.services_map.lookup(key)
        if current is None:
            return False
        self.services_map.delete(key)
        for slot in range(current.count):
            self.backends_map.delete(BackendKey(current.id, slot))
        return True

    def services(self) -> dict[Service, list[tuple[IPv4Address, int]]]:
        """Every service and its backends, read back from the maps."""
        result = {}
        for key, svc in self.services_map.items():
            slots = (self.backends_map.lookup(BackendKey(svc.id, i)) for i in range(svc.count))
            result[service_of(key)] = [(_ip_of(b.ip), _port_of(b.port)) for b in slots if b]
        return result

    def stats(self) -> dict[Service, ServiceStats]:
        """Per-service counters, summed over CPUs."""
        result = {}
        for key, svc in self.services_map.items():
            per_cpu = self.stats_map.lookup(ctypes.c_uint32(svc.id)) or []
            result[service_of(key)] = ServiceStats(
                sum(s.connects for s in per_cpu), sum(s.no_backend for s in per_cpu)
            )
        return result

    def program_stats(self) -> dict[str, ProgramStats]:
        return program_stats(self.programs)

    # lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release our fds. Pinned maps and links stay: balancing goes on without us."""
        self._obj.close()

    def __enter__(self) -> SockLB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def remove(pin_dir: Path = DEFAULT_PIN_DIR) -> None:
        """Detach every pinned link and remove every pin in ``pin_dir`` (a cold start)."""
        remove_pins(pin_dir)


# Kept importable under their old private names for loaders written before ``_links``
# (capture.py, nodesteer.py): new code imports them from hybridmesh.ebpf._links.
_cgroup_id, _replace_program, _detach_pin = cgroup_id, replace_program, detach_pin
