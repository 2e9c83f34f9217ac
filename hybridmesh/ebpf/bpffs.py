"""The BPF filesystem: where maps and links are pinned so they outlive the agent that made them.

Every pin directory of ours is ``<bpffs>/hm-*`` (``env.PREFIX``), so ``lab down`` and the
tests can find and remove everything after a crash.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from hybridmesh import env
from hybridmesh.ebpf.errors import BpfError

__all__ = ["ensure_mounted", "is_mounted", "pin_dir", "remove_pin_dir"]

_MOUNTINFO = Path("/proc/self/mountinfo")


def is_mounted(path: Path | None = None, mountinfo: Path = _MOUNTINFO) -> bool:
    """True when a bpf filesystem is mounted exactly at ``path`` (default env.BPFFS)."""
    want = str(path or env.BPFFS)
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        fstype = fields[fields.index("-") + 1]
        if fields[4] == want and fstype == "bpf":
            return True
    return False


def ensure_mounted(path: Path | None = None) -> bool:
    """Mount bpffs at ``path`` unless it already is; True if this call mounted it."""
    target = path or env.BPFFS
    if is_mounted(target):
        return False
    target.mkdir(parents=True, exist_ok=True)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.mount(b"bpf", os.fsencode(target), b"bpf", 0, b"mode=0700") != 0:
        code = ctypes.get_errno()
        raise BpfError(
            f"cannot mount bpffs at {target}: {os.strerror(code)}",
            "run as root: mount -t bpf bpf /sys/fs/bpf",
            code,
        )
    return True


def pin_dir(name: str, root: Path | None = None) -> Path:
    """``<bpffs>/<name>``, after checking the name carries our prefix and is one component."""
    if not name.startswith(env.PREFIX) or "/" in name or name in (".", ".."):
        raise ValueError(
            f"pin directory {name!r} must be one path component starting {env.PREFIX!r}"
        )
    return (root or env.BPFFS) / name


def remove_pin_dir(path: Path) -> None:
    """Unpin everything in a pin directory and remove it (pins are files; rmdir needs it empty).

    Unpinning a map or link only drops the filesystem reference: whatever still holds an fd
    keeps the object alive.
    """
    if not path.name.startswith(env.PREFIX):
        raise ValueError(f"refusing to remove {path}: not an {env.PREFIX}* pin directory")
    if not path.exists():
        return
    for pin in path.iterdir():
        pin.unlink()
    path.rmdir()
