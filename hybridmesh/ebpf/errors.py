"""Typed errors of the eBPF layer: each says what failed and what to do about it."""

from __future__ import annotations

__all__ = ["BpfError", "BtfLayoutError", "BuildError"]


class BpfError(Exception):
    """A libbpf or bpf(2) operation failed.

    ``errno`` is the positive error number (0 when none applies); ``hint`` says what to do;
    ``log`` carries what libbpf printed during the operation (the verifier's log for a failed
    load), so a rejected program is explained where the error is shown.
    """

    def __init__(self, message: str, hint: str = "", errno: int = 0, log: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.errno = errno
        self.log = log

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        if self.log:
            text += "\nlibbpf said:\n" + self.log
        return text


class BtfLayoutError(BpfError):
    """A ctypes mirror of a kernel struct does not match the object's BTF (size or offsets)."""


class BuildError(BpfError):
    """Compiling the kernel programs (or generating vmlinux.h) failed."""
