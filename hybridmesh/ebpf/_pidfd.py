"""Taking a copy of another process's listening socket: ``pidfd_getfd(2)`` (Linux ≥ 5.6).

Why: ``sk_lookup`` can only steer a connection to a socket that sits in a SOCKMAP/SOCKHASH,
and only the loader (root, with the map's fd) can put it there — but the socket belongs to the
pod's proxy, which opened it itself. ``pidfd_getfd`` duplicates the proxy's descriptor into
this process (PTRACE_MODE_ATTACH: root may), the loader inserts it and closes its copy; the
map keeps only a reference that the kernel drops when the proxy closes the socket.

The socket is found without asking the proxy anything: ``/proc/<pid>/net/tcp`` lists the
listening sockets of the process's network namespace with their inode, and the process's
``/proc/<pid>/fd`` links name ``socket:[<inode>]``.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["find_listener", "listening_inodes", "pidfd_getfd", "take_listener"]

_SYS_PIDFD_GETFD = 438  # same number on every architecture (new-style syscall table)
_TCP_LISTEN = "0A"


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def listening_inodes(tcp_table: str, port: int) -> set[int]:
    """Inodes of the sockets listening on ``port`` in a ``/proc/net/tcp`` text (any address)."""
    found: set[int] = set()
    for line in tcp_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _TCP_LISTEN:
            continue
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[9] != "0":
            found.add(int(fields[9]))
    return found


def _socket_fds(pid: int, inodes: set[int]) -> int | None:
    base = Path(f"/proc/{pid}/fd")
    for entry in base.iterdir():
        try:
            target = os.readlink(entry)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            return int(entry.name)
    return None


def find_listener(pids: Iterable[int], port: int) -> tuple[int, int] | None:
    """(pid, fd) of the first process in ``pids`` holding a TCP socket listening on ``port``."""
    for pid in pids:
        try:
            inodes = listening_inodes(Path(f"/proc/{pid}/net/tcp").read_text(), port)
            fd = _socket_fds(pid, inodes) if inodes else None
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # exited while we looked
        if fd is not None:
            return pid, fd
    return None


def pidfd_getfd(pid: int, fd: int) -> int:
    """A duplicate of process ``pid``'s descriptor ``fd`` in this process (close it yourself)."""
    pidfd = os.pidfd_open(pid)
    try:
        dup = _libc().syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd(pid {pid}, fd {fd}): {os.strerror(err)}")
        return int(dup)
    finally:
        os.close(pidfd)


def take_listener(pids: Iterable[int], port: int) -> int | None:
    """A duplicate of the socket listening on ``port`` held by one of ``pids``, or None."""
    found = find_listener(pids, port)
    if found is None:
        return None
    try:
        return pidfd_getfd(*found)
    except ProcessLookupError:
        return None
