"""Probes for the kernel itself: privileges, version, BTF, the bpf() syscall, bpffs."""

from __future__ import annotations

import ctypes
import os
import re
from typing import Any

from hybridmesh.doctor._mountinfo import parse_mountinfo
from hybridmesh.doctor.host import Session
from hybridmesh.doctor.model import Outcome, ProbeError

__all__ = [
    "LIBBPF",
    "MIN_KERNEL",
    "load_libbpf",
    "probe_bpf_syscall",
    "probe_bpffs",
    "probe_btf",
    "probe_kernel_version",
    "probe_libbpf",
    "probe_root",
]

MIN_KERNEL = (5, 15)
"""Oldest kernel with every eBPF feature the placements use (sockops, sk_msg, cgroup hooks,
ring buffers, BTF-enabled CO-RE)."""

LIBBPF = "libbpf.so.1"
_BPF_MAP_TYPE_ARRAY = 2
_RELEASE = re.compile(r"^(\d+)\.(\d+)")


def probe_root(session: Session) -> Outcome:
    euid = session.host.euid()
    if euid == 0:
        return Outcome.passed("euid 0")
    return Outcome.failed(f"running as euid {euid}")


def parse_release(release: str) -> tuple[int, int]:
    """``6.18.44-fc-v595`` → ``(6, 18)``; :class:`ProbeError` for anything unparseable."""
    match = _RELEASE.match(release)
    if match is None:
        raise ProbeError(f"cannot parse kernel release {release!r}")
    return int(match.group(1)), int(match.group(2))


def probe_kernel_version(session: Session) -> Outcome:
    release = session.host.kernel_release()
    if parse_release(release) >= MIN_KERNEL:
        return Outcome.passed(release)
    want = ".".join(map(str, MIN_KERNEL))
    return Outcome.failed(f"{release} is older than {want}")


def probe_btf(session: Session) -> Outcome:
    path = session.host.btf
    if not path.is_file():
        return Outcome.failed(f"{path} does not exist")
    size = path.stat().st_size
    if size == 0:
        return Outcome.failed(f"{path} is empty")
    return Outcome.passed(f"{size // 1024} KiB")


def probe_bpffs(session: Session) -> Outcome:
    want = str(session.host.bpffs)
    mounts = parse_mountinfo(session.host.mountinfo.read_text())
    if any(m.mount_point == want and m.fstype == "bpf" for m in mounts):
        return Outcome.passed()
    return Outcome.failed(f"no bpf filesystem mounted at {want}")


def load_libbpf(session: Session) -> Any:
    """libbpf through ctypes, exactly as the eBPF loaders will open it."""
    try:
        return session.host.load_library(LIBBPF)
    except OSError as exc:
        raise ProbeError(f"cannot load {LIBBPF}: {exc}") from exc


def probe_libbpf(session: Session) -> Outcome:
    lib = load_libbpf(session)
    if not hasattr(lib, "bpf_map_create"):
        return Outcome.failed(f"{LIBBPF} has no bpf_map_create (libbpf older than 0.7)")
    if not hasattr(lib, "libbpf_major_version"):
        return Outcome.passed(LIBBPF)
    version = f"{lib.libbpf_major_version()}.{lib.libbpf_minor_version()}"
    return Outcome.passed(f"{LIBBPF} (libbpf {version})")


def probe_bpf_syscall(session: Session) -> Outcome:
    """Create (and close) a one-entry array map: the cheapest real use of bpf(2)."""
    lib = load_libbpf(session)
    create = lib.bpf_map_create
    create.restype = ctypes.c_int
    create.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_void_p,
    ]
    fd = create(_BPF_MAP_TYPE_ARRAY, b"hm_check", 4, 4, 1, None)
    if fd < 0:
        return Outcome.failed(f"bpf(BPF_MAP_CREATE) failed: {_errno_text(-fd)}")
    session.host.close_fd(fd)
    return Outcome.passed("created and closed an array map")


def _errno_text(errno: int) -> str:
    return f"{os.strerror(errno)} (errno {errno})"
