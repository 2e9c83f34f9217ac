"""Traffic capture for ``sidecar+ebpf`` pods: the loader of ``bpf/capture.bpf.c``.

What the kernel does is described in the C file; in short, per pod:

- cgroup/connect4 + connect6 + sockops + cgroup/getsockopt on the pod's cgroup v2 directory
  send the app's outbound TCP connects to the proxy's 127.0.0.1:15001 and answer the proxy's
  ``SO_ORIGINAL_DST`` (the proxy's iptables-era code reads it unchanged). AF_INET6 sockets
  dialling v4-mapped addresses (``::ffff:a.b.c.d``, the dual-stack default of Java, Node and
  Go) are captured too; native IPv6 is not (pods are IPv4-only). An original destination is
  deleted when the proxy's side of the connection closes, so the map holds live connections;
- cgroup/getpeername4 + getpeername6 on the same cgroup make the app's ``getpeername()`` report
  the address it dialled, as iptables REDIRECT does, for as long as the app's socket lives (the
  destination is kept in the socket's own storage, ``peer_by_sock``);
- sk_lookup on the pod's netns hands inbound TCP for the pod IP to the proxy's 15006 listener
  in the ``listeners`` sockhash (keyed by pod IP). The sockops program puts a listener there
  itself the moment the proxy listens (the pod's netns is in ``netns_pods``:
  :meth:`Capture.set_netns_pod`), so a restarted proxy gets inbound back at once;
  :meth:`Capture.set_listener` inserts one that already listened before.

State is pinned under ``<bpffs>/hm-<node>-capture/``: the maps, and one link per hook and pod
(``link-<hook>-<cgroup id>``, ``link-sk_lookup-<netns inode>``). :meth:`Capture.load` reuses
the pinned maps and moves every pinned link to the freshly loaded program with
``bpf_link__update_program`` — a restarted agent interrupts no connection and loses no
original destination. :meth:`Capture.remove` is the cold start.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf._libbpf import (
    BpfObject,
    BpfProgram,
    map_delete,
    map_lookup,
    map_next_key,
    map_update,
    prog_info,
)
from hybridmesh.ebpf._links import rebind_pinned_links
from hybridmesh.ebpf.build import BPF_DIR
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.ebpf.maps import Map, PerCpuMap
from hybridmesh.ebpf.sock_lb import _cgroup_id, _detach_pin, _replace_program

__all__ = [
    "CGROUP_HOOKS",
    "MAPS",
    "NETNS_HOOK",
    "OBJECT",
    "RETIRED_MAPS",
    "CapDst",
    "CapPod",
    "Capture",
    "CaptureConfig",
    "CaptureCounters",
    "PodCounters",
]

OBJECT = BPF_DIR / "capture.bpf.o"
CGROUP_HOOKS = {"connect4": "hm_cap_connect4", "connect6": "hm_cap_connect6",
                "sockops": "hm_cap_sockops", "getsockopt": "hm_cap_getsockopt",
                "getpeername4": "hm_cap_getpeername4", "getpeername6": "hm_cap_getpeername6"}
NETNS_HOOK = ("sk_lookup", "hm_cap_lookup")
MAPS = ("peer_by_sock", "orig_by_addr", "proxy_cgroups", "pods", "netns_pods", "listeners",
        "counters")
# pins an older object had, which no program uses any more: dropped at load
RETIRED_MAPS = ("orig_by_cookie",)
EXCLUDED_SLOTS = 8  # HM_CAP_EXCLUDED_PORTS
MAX_PODS, MAX_CONNS = 1024, 65536  # HM_CAP_MAX_PODS, HM_CAP_MAX_CONNS
_MAX_ENTRIES = {"orig_by_addr": MAX_CONNS, "proxy_cgroups": MAX_PODS,
                "pods": MAX_PODS, "netns_pods": MAX_PODS, "listeners": MAX_PODS}
_COUNTERS = ("redirected", "proxy", "answered", "unknown")  # HM_CAP_STAT_* order


# --- mirrors of bpf/capture.h (checked against the object's BTF by Map) ------------------------


class CapDst(ctypes.Structure):
    _fields_ = [("ip", ctypes.c_uint32), ("port", ctypes.c_uint16), ("answered", ctypes.c_uint16)]


class CapAddr(ctypes.Structure):
    _fields_ = [
        ("netns", ctypes.c_uint64),
        ("ip", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


class CapPod(ctypes.Structure):
    _fields_ = [("steered", ctypes.c_uint64), ("refused", ctypes.c_uint64)]


@dataclass(frozen=True)
class CaptureConfig:
    """The pod proxies' ports and identities (Istio's habits; lab/sidecar.py's values)."""

    outbound_port: int = 15001
    inbound_port: int = 15006
    proxy_uid: int = 1337
    proxy_mark: int = 0x539
    excluded_inbound_ports: tuple[int, ...] = (15001, 15006, 15008, 15020, 15021)

    def __post_init__(self) -> None:
        ports = (self.outbound_port, self.inbound_port, *self.excluded_inbound_ports)
        if not all(0 < p < 65536 for p in ports):
            raise ValueError(f"capture ports must be TCP ports (1..65535), got {ports}")
        if len(self.excluded_inbound_ports) > EXCLUDED_SLOTS:
            raise ValueError(f"at most {EXCLUDED_SLOTS} excluded inbound ports")
        if {self.outbound_port, self.inbound_port} - set(self.excluded_inbound_ports):
            raise ValueError("the proxy's own listener ports must be excluded from inbound capture")


@dataclass(frozen=True)
class CaptureCounters:
    redirected: int
    """Outbound connects sent to the proxy."""
    proxy: int
    """Connects by the proxy itself, left alone."""
    answered: int
    """SO_ORIGINAL_DST answers given to the proxy."""
    unknown: int
    """SO_ORIGINAL_DST asked on the outbound port for a connection capture did not record."""


@dataclass(frozen=True)
class PodCounters:
    steered: int
    """Inbound connections handed to the proxy's listener."""
    refused: int
    """Inbound connections dropped because the proxy's listener was gone."""


def _net32(ip: IPv4Address | str) -> ctypes.c_uint32:
    return ctypes.c_uint32(int.from_bytes(IPv4Address(ip).packed, sys.byteorder))


def _ip_of(net32: int) -> IPv4Address:
    return IPv4Address(net32.to_bytes(4, sys.byteorder))


def _netns_id(netns: Path) -> int:
    """The namespace's nsfs inode: what names it for as long as it lives."""
    try:
        return os.stat(netns).st_ino
    except OSError as exc:
        raise BpfError(f"cannot stat netns {netns}: {exc.strerror}", errno=exc.errno or 0) from exc


class Capture:
    """The loaded capture object, its typed maps and its pinned links."""

    def __init__(self, obj: BpfObject, pin_dir: Path) -> None:
        self.pin_dir = pin_dir
        self._obj = obj
        self.orig_by_addr = Map(obj.map("orig_by_addr"), CapAddr, CapDst)
        self.proxy_cgroups = Map(obj.map("proxy_cgroups"), ctypes.c_uint64, ctypes.c_uint8)
        self.pods_map = Map(obj.map("pods"), ctypes.c_uint32, CapPod)
        self.netns_pods = Map(obj.map("netns_pods"), ctypes.c_uint32, ctypes.c_uint32)
        # a sockhash carries no BTF key/value (the kernel refuses it): raw element calls
        self._listeners_fd = obj.map("listeners").fd
        self.counters_map = PerCpuMap(obj.map("counters"), ctypes.c_uint32, ctypes.c_uint64)
        self.programs = {hook: obj.program(name) for hook, name in CGROUP_HOOKS.items()}
        self.programs[NETNS_HOOK[0]] = obj.program(NETNS_HOOK[1])

    @classmethod
    def load(
        cls, pin_dir: Path, config: CaptureConfig = CaptureConfig(), obj_path: Path = OBJECT
    ) -> Capture:
        """Load the programs, reusing maps pinned in ``pin_dir`` and re-binding pinned links."""
        bpffs.ensure_mounted()
        bpffs.pin_dir(pin_dir.name, pin_dir.parent)  # validates the hm- prefix
        pin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        obj = BpfObject.open(obj_path)
        try:
            _configure(obj, config)
            _drop_retired(pin_dir)
            for name in MAPS:
                obj.map(name).set_pin_path(pin_dir / name)
            obj.load()
            capture = cls(obj, pin_dir)
            rebind_pinned_links(pin_dir, capture.programs)
        except BaseException:
            obj.close()
            raise
        return capture

    # links -------------------------------------------------------------------------------

    def _ensure_link(self, pin: Path, program: BpfProgram, attach: Path, netns: bool) -> None:
        # a severed pin may share the number of a since-removed cgroup/netns: attach afresh then
        if pin.exists() and _replace_program(pin, program):
            return
        link = program.attach_netns(attach) if netns else program.attach_cgroup(attach)
        try:
            link.pin(pin)
        except BpfError:
            link.detach()
            raise
        finally:
            link.destroy()  # the pin holds the attachment now

    def attach_cgroup(self, cgroup: Path) -> int:
        """Capture outbound connects of ``cgroup`` (the pod's directory); its id. Idempotent."""
        cgroup_id = _cgroup_id(cgroup)
        for hook in CGROUP_HOOKS:
            self._ensure_link(self.pin_dir / f"link-{hook}-{cgroup_id}", self.programs[hook],
                              cgroup, netns=False)
        return cgroup_id

    def attach_netns(self, netns: Path) -> int:
        """Steer inbound connections in ``netns`` (a netns file); its inode. Idempotent."""
        ns_id = _netns_id(netns)
        hook = NETNS_HOOK[0]
        self._ensure_link(self.pin_dir / f"link-{hook}-{ns_id}", self.programs[hook], netns,
                          netns=True)
        return ns_id

    def attached(self) -> dict[str, list[int]]:
        """Pinned link ids (cgroup ids / netns inodes) by hook."""
        hooks = [*CGROUP_HOOKS, NETNS_HOOK[0]]
        return {h: sorted(int(p.name.rsplit("-", 1)[1]) for p in self.pin_dir.glob(f"link-{h}-*"))
                for h in hooks}

    def detach(self, keep: Collection[int] = ()) -> list[int]:
        """Detach and unpin every link whose cgroup id / netns inode is not in ``keep``."""
        gone = []
        for pin in sorted(self.pin_dir.glob("link-*")):
            target = int(pin.name.rsplit("-", 1)[1])
            if target not in keep:
                _detach_pin(pin)
                gone.append(target)
        return sorted(set(gone))

    # per-pod state ---------------------------------------------------------------------

    def exclude_cgroup(self, cgroup: Path) -> int:
        """Never capture connects made from ``cgroup`` (the pod's proxy leaf); its id."""
        cgroup_id = _cgroup_id(cgroup)
        self.proxy_cgroups.update(ctypes.c_uint64(cgroup_id), ctypes.c_uint8(1))
        return cgroup_id

    def set_netns_pod(self, netns: Path, pod_ip: IPv4Address | str) -> None:
        """Name the pod that owns ``netns``: a listener that appears there on the inbound port
        joins ``listeners`` under ``pod_ip`` by itself (no sync needed after a proxy restart).
        Inbound steering itself starts with :meth:`steer_inbound`."""
        self.netns_pods.update(ctypes.c_uint32(_netns_id(netns)), _net32(pod_ip))

    def steer_inbound(self, pod_ip: IPv4Address | str) -> None:
        """Turn inbound capture on for ``pod_ip`` (its ``pods`` entry): from now on inbound SYNs
        go to its listener, or are dropped while it has none (capture fails closed)."""
        key = _net32(pod_ip)
        if self.pods_map.lookup(key) is None:
            self.pods_map.update(key, CapPod())

    def set_listener(self, pod_ip: IPv4Address | str, sock_fd: int) -> None:
        """Steer inbound TCP for ``pod_ip`` to the listening socket ``sock_fd`` (the caller
        keeps its fd: the map holds a reference that lives as long as the proxy's socket)."""
        key = _net32(pod_ip)
        map_update(self._listeners_fd, key, ctypes.c_uint64(sock_fd))
        self.steer_inbound(pod_ip)

    def has_listener(self, pod_ip: IPv4Address | str) -> bool:
        """True while the listener set for ``pod_ip`` is open (a closed socket leaves the map)."""
        return map_lookup(self._listeners_fd, _net32(pod_ip), ctypes.c_uint64())

    def forget(self, keep_ips: Collection[str], keep_cgroups: Collection[int]) -> None:
        """Drop pods and proxy cgroups that are not kept (pods gone from the node)."""
        keep = {_net32(ip).value for ip in keep_ips}
        for key in list(self.pods_map.keys()):
            if key.value not in keep:
                self.pods_map.delete(key)
                map_delete(self._listeners_fd, key)
        for ns in list(self.netns_pods.keys()):
            ip = self.netns_pods.lookup(ns)
            if ip is None or ip.value not in keep:
                self.netns_pods.delete(ns)
        for cg in list(self.proxy_cgroups.keys()):
            if cg.value not in keep_cgroups:
                self.proxy_cgroups.delete(cg)

    # reading back ----------------------------------------------------------------------

    def pods(self) -> dict[IPv4Address, PodCounters]:
        items = self.pods_map.items()
        return {_ip_of(k.value): PodCounters(v.steered, v.refused) for k, v in items}

    def counters(self) -> CaptureCounters:
        values = []
        for i in range(len(_COUNTERS)):
            per_cpu = self.counters_map.lookup(ctypes.c_uint32(i)) or []
            values.append(sum(v.value for v in per_cpu))
        return CaptureCounters(*values)

    def map_entries(self) -> Iterator[tuple[str, int, int]]:
        """(name, entries, max_entries) for every map except the per-CPU counters and the
        socket storage (neither can be counted by key)."""
        for name, key_type in _KEYS.items():
            yield name, _count_keys(self._obj.map(name).fd, key_type), _MAX_ENTRIES[name]

    def program_ids(self) -> dict[str, tuple[int, int, int]]:
        """(prog id, run_cnt, run_time_ns) by hook."""
        infos = {hook: prog_info(p.fd) for hook, p in self.programs.items()}
        return {hook: (i.id, i.run_cnt, i.run_time_ns) for hook, i in infos.items()}

    # lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release our fds. Pinned maps and links stay: capture goes on without us."""
        self._obj.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def remove(pin_dir: Path) -> None:
        """Detach every pinned link and remove every pin in ``pin_dir`` (a cold start)."""
        if pin_dir.exists():
            for pin in sorted(pin_dir.glob("link-*")):
                _detach_pin(pin)
        bpffs.remove_pin_dir(pin_dir)


_KEYS: dict[str, type[ctypes.c_uint32 | ctypes.c_uint64 | CapAddr]] = {
    "orig_by_addr": CapAddr,
    "proxy_cgroups": ctypes.c_uint64,
    "pods": ctypes.c_uint32,
    "netns_pods": ctypes.c_uint32,
    "listeners": ctypes.c_uint32,
}


def _count_keys(map_fd: int, key_type: type[ctypes.c_uint32 | ctypes.c_uint64 | CapAddr]) -> int:
    count, prev = 0, None
    while True:
        nxt = key_type()
        if not map_next_key(map_fd, prev, nxt):
            return count
        count, prev = count + 1, nxt


def _drop_retired(pin_dir: Path) -> None:
    """Unpin maps of an older capture object (the pins of an agent before an upgrade)."""
    for name in RETIRED_MAPS:
        (pin_dir / name).unlink(missing_ok=True)


def _configure(obj: BpfObject, config: CaptureConfig) -> None:
    obj.set_rodata("outbound_port", ctypes.c_uint16(config.outbound_port))
    obj.set_rodata("inbound_port", ctypes.c_uint16(config.inbound_port))
    obj.set_rodata("proxy_uid", ctypes.c_uint32(config.proxy_uid))
    obj.set_rodata("proxy_mark", ctypes.c_uint32(config.proxy_mark))
    ports = list(config.excluded_inbound_ports) + [0] * EXCLUDED_SLOTS
    obj.set_rodata("excluded_ports", (ctypes.c_uint16 * EXCLUDED_SLOTS)(*ports[:EXCLUDED_SLOTS]))
