"""glibc malloc settings for processes that terminate TLS on uvloop (the proxies).

Why: uvloop's SSL transport decrypts every read into a fresh 256 KiB ``bytes``
(``SSL_READ_MAX_SIZE``) and then shrinks it to the record's size. glibc serves an allocation
that large with ``mmap``, shrinks it with ``mremap`` and frees it with ``munmap``: three
syscalls and fresh page faults per TLS record. Its adaptive threshold never learns, because
the chunk it frees is the shrunk one. On this project's machine that tripled the CPU of a
1 KiB request/response over TLS (53 → 15 µs per round trip for both ends, uvloop echo; see
docs/proxy.md "Memory allocator"). With ``M_MMAP_THRESHOLD`` above 256 KiB the buffer comes
from the heap, and ``M_TRIM_THRESHOLD`` above it stops glibc from handing the heap top back
to the kernel after each read. Only the first page of the buffer is ever written, so RSS does
not grow.

glibc reads these settings from the environment when the process starts, and Python has no
``mallopt`` (``ctypes`` costs ~0.4 MB per proxy), so a proxy started without them executes
itself again, once, with them set. Worker processes inherit the environment.
"""

from __future__ import annotations

import os
import sys
from typing import Final

__all__ = ["MALLOC_ENV", "reexec_with_malloc_env"]

MALLOC_ENV: Final[dict[str, str]] = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(4 << 20),
}


def reexec_with_malloc_env() -> None:
    """Replace this process with the same command line and :data:`MALLOC_ENV` set, unless it
    already runs with it. Call only from a ``__main__`` block: it never returns when it execs
    (same PID, so supervisors and the lab keep tracking it)."""
    if all(os.environ.get(key) == value for key, value in MALLOC_ENV.items()):
        return
    os.execve(sys.executable, sys.orig_argv, {**os.environ, **MALLOC_ENV})
