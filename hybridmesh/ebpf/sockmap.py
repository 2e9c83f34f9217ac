"""Socket-to-socket acceleration on one node: the loader of ``bpf/sockmap.bpf.c``.

A sockops program on the pod cgroups puts every established TCP socket whose two ends are on
this node (both local pod addresses, or both loopback: the app↔sidecar hop) into a sockhash;
an sk_msg program on that sockhash hands each sent message straight to the peer socket's
receive queue. The local pod addresses are what :meth:`SockMap.set_local_ips` writes.

Policy: each socket remembers the shared policy epoch (``hm_policy_epoch``, bumped by
l4policy after every policy change) it was admitted under; once the epoch moves, its messages
go back through the TCP stack, where the packet-level policy sees them.

Restart (agent upgrade), as for :mod:`hybridmesh.ebpf.sock_lb`::

    sm = SockMap.load(pin_dir, shared_dir)  # maps reused from the pins (the sockhash with
                                            # every accelerated socket in it); the new sk_msg
                                            # program attached to it, then every pinned
                                            # sockops link pointed at the new sockops program

Sockets that are already in the sockhash keep the sk_msg program they were admitted with (the
kernel copies the map's programs into a socket's psock when it joins), so an upgrade never
changes an established connection's path; new connections get the new program.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from ipaddress import IPv4Address
from pathlib import Path

from hybridmesh.ebpf import _libbpf
from hybridmesh.ebpf._libbpf import BpfObject
from hybridmesh.ebpf._links import (
    CgroupLinks,
    ProgramStats,
    prepare_pin_dirs,
    program_ids,
    program_stats,
    remove_pins,
    sum_per_cpu,
)
from hybridmesh.ebpf._shared import BYTES_MAP, EPOCH_MAP, pin_shared, shared_fd
from hybridmesh.ebpf.btf import BtfKind, check_layout
from hybridmesh.ebpf.build import BPF_DIR
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.ebpf.maps import Map, PerCpuMap

__all__ = [
    "BPF_SK_MSG_VERDICT",
    "BYTES_MAP",
    "EPOCH_MAP",
    "MAX_LOCAL_IPS",
    "MAX_SOCKETS",
    "OBJECT",
    "Counters",
    "LocalIp",
    "SockBytes",
    "SockKey",
    "SockMap",
    "SockMapStats",
    "SocketTuple",
    "is_loopback",
    "sock_key",
    "tuple_of",
]

OBJECT = BPF_DIR / "sockmap.bpf.o"
BPF_SK_MSG_VERDICT = 7  # enum bpf_attach_type
AF_INET = 2
MAX_SOCKETS = 65536  # HM_SM_MAX_SOCKETS
MAX_LOCAL_IPS = 4096  # HM_SM_MAX_LOCAL_IPS
MAPS = ("sock_hash", "peer_socks", "local_ips", "sock_state", "stats")
PROGRAMS = {"sockops": "hm_sockops", "sk_msg": "hm_sk_msg"}


# --- mirrors of bpf/sockmap.h (checked against the object's BTF by Map) -----------------------


class SockKey(ctypes.Structure):
    _fields_ = [
        ("netns", ctypes.c_uint64),
        ("local_ip4", ctypes.c_uint32),
        ("remote_ip4", ctypes.c_uint32),
        ("local_port", ctypes.c_uint16),
        ("remote_port", ctypes.c_uint16),
        ("family", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


class SockBytes(ctypes.Structure):
    """``struct hm_sock_bytes`` (bpf/sock_bytes.h), checked by size: the map is shared."""

    _fields_ = [("sent", ctypes.c_uint64), ("received", ctypes.c_uint64)]


class LocalIp(ctypes.Structure):
    _fields_ = [("present", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3)]


class SockMapStats(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "admitted",
            "not_local",
            "insert_failed",
            "redirected_msgs",
            "redirected_bytes",
            "pass_no_peer",
            "pass_epoch",
            "pass_bytes",
            "pass_backlog",
        )
    ]


# --- pure translation -------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class SocketTuple:
    """One connected socket seen from its own side. ``netns`` (a netns cookie) is set only
    when both ends are loopback: those tuples repeat in every pod, pod addresses do not."""

    local: IPv4Address
    local_port: int
    remote: IPv4Address
    remote_port: int
    netns: int = 0

    @property
    def peer(self) -> SocketTuple:
        """The other end's tuple (what the sk_msg program looks up)."""
        return SocketTuple(self.remote, self.remote_port, self.local, self.local_port, self.netns)

    def __str__(self) -> str:
        return f"{self.local}:{self.local_port}->{self.remote}:{self.remote_port}"


@dataclass(frozen=True)
class Counters:
    """The datapath's counters, summed over CPUs (see ``struct hm_sockmap_stats``)."""

    admitted: int = 0
    not_local: int = 0
    insert_failed: int = 0
    redirected_msgs: int = 0
    redirected_bytes: int = 0
    pass_no_peer: int = 0
    pass_epoch: int = 0
    pass_bytes: int = 0
    pass_backlog: int = 0
    """Sockets whose peer fell behind by more than its bound: TCP (flow control) from then on."""

    def to_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def is_loopback(ip: IPv4Address) -> bool:
    return ip.is_loopback


def _net32(ip: IPv4Address) -> int:
    return int.from_bytes(ip.packed, sys.byteorder)


def _ip_of(net32: int) -> IPv4Address:
    return IPv4Address(net32.to_bytes(4, sys.byteorder))


def _port(port: int) -> int:
    if not isinstance(port, int) or not 0 < port <= 0xFFFF:
        raise ValueError(f"port {port!r} is not in 1..65535")
    return port


def sock_key(t: SocketTuple) -> SockKey:
    """The sockhash key of ``t``, exactly as hm_sockops builds it."""
    both_loopback = is_loopback(t.local) and is_loopback(t.remote)
    if t.netns and not both_loopback:
        raise ValueError(f"{t}: only loopback tuples are scoped by netns")
    return SockKey(
        t.netns if both_loopback else 0,
        _net32(t.local),
        _net32(t.remote),
        _port(t.local_port),
        _port(t.remote_port),
        AF_INET,
        0,
    )


def tuple_of(key: SockKey) -> SocketTuple:
    local, remote = _ip_of(key.local_ip4), _ip_of(key.remote_ip4)
    return SocketTuple(local, key.local_port, remote, key.remote_port, key.netns)


# --- the loaded programs ----------------------------------------------------------------------


class SockMap:
    """The loaded sockmap object, its typed maps and its pinned cgroup links."""

    def __init__(self, obj: BpfObject, pin_dir: Path) -> None:
        self.pin_dir = pin_dir
        self._obj = obj
        self.sock_hash = _SockHash(obj)
        self.local_ips_map = Map(obj.map("local_ips"), ctypes.c_uint32, LocalIp)
        self.stats_map = PerCpuMap(obj.map("stats"), ctypes.c_uint32, SockMapStats)
        self.epoch_map = _Epoch(obj)
        self._bytes_fd = shared_fd(obj, BYTES_MAP)
        self.programs = {hook: obj.program(name) for hook, name in PROGRAMS.items()}
        self.links = CgroupLinks(pin_dir, "sockops")

    @classmethod
    def load(cls, pin_dir: Path, shared_dir: Path, obj_path: Path = OBJECT) -> SockMap:
        """Load, reusing maps pinned in ``pin_dir`` (and the epoch in ``shared_dir``), attach
        sk_msg to the sockhash and re-bind every pinned sockops link."""
        prepare_pin_dirs(pin_dir, shared_dir)
        _drop_outgrown_stats(pin_dir / "stats")
        obj = BpfObject.open(obj_path)
        try:
            for name in MAPS:
                obj.map(name).set_pin_path(pin_dir / name)
            pin_shared(obj, shared_dir, EPOCH_MAP, BYTES_MAP)
            obj.load()
            sm = cls(obj, pin_dir)
            # sk_msg before sockops: a socket takes the sockhash's programs when it joins
            _libbpf.prog_attach(sm.programs["sk_msg"].fd, sm.sock_hash_fd, BPF_SK_MSG_VERDICT)
            sm.links.rebind(sm.programs["sockops"])
        except BaseException:
            obj.close()
            raise
        return sm

    def tracked_peers(self) -> int:
        """Entries in ``peer_socks`` (one per accelerated socket still open)."""
        return sum(1 for _ in _keys(self._obj.map("peer_socks").fd))

    @property
    def sock_hash_fd(self) -> int:
        return self.sock_hash.fd

    # links -------------------------------------------------------------------------------

    def attach(self, cgroup: Path) -> None:
        """Accelerate sockets of ``cgroup`` (and descendants). Idempotent."""
        self.links.attach(self.programs["sockops"], cgroup)

    def attached(self) -> list[int]:
        """Cgroup ids (inode numbers) with a pinned sockops link."""
        return self.links.attached()

    def detach(self, cgroup: Path | int | None = None) -> None:
        """Stop admitting sockets of ``cgroup`` (a path or cgroup id; every cgroup when None).
        Sockets already in the sockhash stay accelerated until they close."""
        self.links.detach(cgroup)

    # local addresses ---------------------------------------------------------------------

    def set_local_ips(self, ips: Iterable[IPv4Address | str]) -> None:
        """Make the local-address set exactly ``ips`` (added first, stale ones then deleted)."""
        want = {_net32(IPv4Address(ip)) for ip in ips}
        if len(want) > MAX_LOCAL_IPS:
            raise BpfError(f"{len(want)} local addresses, the map holds {MAX_LOCAL_IPS}")
        present = self.local_ips_map.keys()
        have = {k.value for k in present}
        for ip in want - have:
            self.local_ips_map.update(ctypes.c_uint32(ip), LocalIp(1))
        for ip in have - want:
            self.local_ips_map.delete(ctypes.c_uint32(ip))

    def local_ips(self) -> set[IPv4Address]:
        present = self.local_ips_map.keys()
        return {_ip_of(k.value) for k in present}

    # sockets, epoch, counters ------------------------------------------------------------

    def sockets(self) -> list[SocketTuple]:
        """Every socket in the sockhash now."""
        return sorted(tuple_of(k) for k in _keys(self.sock_hash.fd))

    def __contains__(self, t: SocketTuple) -> bool:
        return sock_key(t) in self.sock_hash

    def redirected(self) -> dict[SocketTuple, tuple[int, int]]:
        """Bytes (sent, received) each socket's messages took past TCP, for the sockets whose
        close flows has not reported yet (it adds them to the close record, then deletes)."""
        result = {}
        for key in list(_keys(self._bytes_fd)):
            value = SockBytes()
            if _libbpf.map_lookup(self._bytes_fd, key, value):
                result[tuple_of(key)] = (value.sent, value.received)
        return result

    def epoch(self) -> int:
        return self.epoch_map.get()

    def bump_epoch(self) -> int:
        """What l4policy does after a policy change (racy against a concurrent bump: tests and
        tools only; l4policy owns the real increments)."""
        new = self.epoch() + 1
        self.epoch_map.set(new)
        return new

    def counters(self) -> Counters:
        return sum_per_cpu(self.stats_map.lookup(ctypes.c_uint32(0)), Counters)

    def program_stats(self) -> dict[str, ProgramStats]:
        return program_stats(self.programs)

    def program_ids(self) -> dict[str, int]:
        return program_ids(self.programs)

    # lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release our fds. Pins stay: established sockets stay accelerated without us."""
        self._obj.close()

    def __enter__(self) -> SockMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def remove(pin_dir: Path) -> None:
        """Detach every sockops link and remove the pins (a cold start). The shared epoch stays
        (it is l4policy's too).

        Sockets already in the sockhash stay accelerated until they close (then the maps and
        programs go with the last of them). They are deliberately not deleted from it: taking a
        socket out of a sockhash frees its queue of redirected bytes not yet read, so the
        application would silently lose them.
        """
        remove_pins(pin_dir)


def _drop_outgrown_stats(pin: Path) -> None:
    """Unpin a ``stats`` map an older object pinned with fewer counters: libbpf refuses to
    reuse a pin whose value size differs, which would stop an upgraded agent from loading.
    Counters are all it holds (they restart from zero); every other pin is kept."""
    if not pin.exists():
        return
    fd = _libbpf.obj_get(pin)
    try:
        info = Path(f"/proc/self/fdinfo/{fd}").read_text()
    finally:
        os.close(fd)
    sizes = [line.split()[1] for line in info.splitlines() if line.startswith("value_size:")]
    if sizes and int(sizes[0]) != ctypes.sizeof(SockMapStats):
        pin.unlink()


def _keys(fd: int) -> Iterator[SockKey]:
    prev: SockKey | None = None
    while True:
        nxt = SockKey()
        if not _libbpf.map_next_key(fd, prev, nxt):
            return
        yield nxt
        prev = nxt


class _Epoch:
    """The shared ``hm_policy_epoch`` (see :mod:`hybridmesh.ebpf._shared`)."""

    def __init__(self, obj: BpfObject) -> None:
        self.fd = shared_fd(obj, EPOCH_MAP)

    def get(self) -> int:
        value = ctypes.c_uint64()
        return value.value if _libbpf.map_lookup(self.fd, ctypes.c_uint32(0), value) else 0

    def set(self, epoch: int) -> None:
        _libbpf.map_update(self.fd, ctypes.c_uint32(0), ctypes.c_uint64(epoch))


class _SockHash:
    """The sockhash, by key. Its key layout is checked against the struct's BTF by name:
    the kernel takes no BTF for socket maps, so libbpf drops the map's key/value type ids."""

    def __init__(self, obj: BpfObject) -> None:
        btf = obj.btf
        check_layout(SockKey, btf, btf.find("hm_sock_key", BtfKind.STRUCT), "sock_hash key")
        self.fd = obj.map("sock_hash").fd

    def __contains__(self, key: SockKey) -> bool:
        return _libbpf.map_lookup(self.fd, key, ctypes.c_uint64())

    def __len__(self) -> int:
        return sum(1 for _ in _keys(self.fd))
