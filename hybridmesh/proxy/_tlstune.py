"""OpenSSL settings Python's ``ssl`` module does not expose, for experiments on TLS contexts.

CPython turns on ``SSL_MODE_RELEASE_BUFFERS`` for every context: OpenSSL frees a connection's
read and write buffers whenever they drain, so each TLS record costs a malloc/free pair (the
buffers are ~17 KiB each). ``ssl`` has no ``SSL_CTX_set_ciphersuites`` either, so the TLS 1.3
suite order is OpenSSL's default, which puts AES-256-GCM first.

Measured with ``python -m hybridmesh.proxy._bench_tlsecho`` (uvloop TLS echo, 1 KiB, 16
connections, medians of 3, two runs): TLS adds 8.7-10.7 µs per round trip (4 record
operations) over plaintext with the defaults; AES-128-GCM first takes 0.6-1.2 µs off, kept
buffers 0.8-2.3 µs, both 1.1-3.1 µs (-13 to -30 %); ChaCha20 costs 2-4 µs *more* than
AES-256 on this AES-NI/VAES CPU. In the proxy pair (``_bench_tls``) that is at most ~1.5 µs
of the ~48 µs a request costs each proxy, for ~250 KiB more RSS per process (``ctypes``)
plus ~34 KiB per open TLS connection (kept buffers, idle pooled connections included).
Against the 30 MB per-proxy target the proxy does **not** apply it; this module stays for
the benchmark and for a deployment that would trade memory for CPU.

The ``SSL_CTX`` behind an :class:`ssl.SSLContext` is reached through ctypes, in the libssl
that ``_ssl`` itself links. The pointer is only used after ``SSL_CTX_get_options`` returns
exactly ``ctx.options`` (proof that it is that context's ``SSL_CTX``); any other interpreter
or TLS library makes :func:`tune` a no-op that says why. Nothing here weakens a context:
TLS 1.3 stays the only version, peer verification and the SPIFFE checks are untouched, and
the suites are a reordering of TLS 1.3's AEAD suites.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from dataclasses import dataclass
from typing import Final

__all__ = ["TLS13_SUITES", "Tuning", "mode", "tune"]

TLS13_SUITES: Final = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
"""AES-128-GCM first (AES-NI/VAES make it the cheapest AEAD here), the others still offered."""

SSL_MODE_RELEASE_BUFFERS: Final = 0x10
_SSL_CTRL_MODE: Final = 33
_SSL_CTRL_CLEAR_MODE: Final = 78
_CTX_OFFSET: Final = object.__basicsize__  # PySSLContext: PyObject_HEAD, then SSL_CTX *ctx


@dataclass(frozen=True, slots=True)
class Tuning:
    """What :func:`tune` does to a context (the defaults: both savings)."""

    keep_buffers: bool = True  # clear SSL_MODE_RELEASE_BUFFERS
    suites: str | None = TLS13_SUITES  # None: OpenSSL's default TLS 1.3 order


_DEFAULT: Final = Tuning()


class _Lib:
    """The libssl functions we call, bound once; ``error`` says why they are unusable."""

    def __init__(self) -> None:
        self.error: str | None = None
        try:
            import _ssl

            lib = ctypes.CDLL(_ssl.__file__)  # dlsym searches its libssl dependency too
            self.ctrl = lib.SSL_CTX_ctrl
            self.get_options = lib.SSL_CTX_get_options
            self.set_suites = lib.SSL_CTX_set_ciphersuites
        except (ImportError, OSError, AttributeError) as exc:
            self.error = f"libssl not reachable through _ssl: {exc}"
            return
        self.ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.ctrl.restype = ctypes.c_long
        self.get_options.argtypes = [ctypes.c_void_p]
        self.get_options.restype = ctypes.c_uint64
        self.set_suites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.set_suites.restype = ctypes.c_int
        if not ssl.OPENSSL_VERSION.startswith("OpenSSL 3") or sys.implementation.name != "cpython":
            self.error = f"unexpected TLS library or interpreter ({ssl.OPENSSL_VERSION})"


_LIB: _Lib | None = None


def _lib() -> _Lib:
    global _LIB  # noqa: PLW0603 - bound once per process, on first use
    if _LIB is None:
        _LIB = _Lib()
    return _LIB


def _ssl_ctx(ctx: ssl.SSLContext, lib: _Lib) -> int | None:
    """The context's ``SSL_CTX *``, or None unless OpenSSL confirms it is that context."""
    pointer = ctypes.c_void_p.from_address(id(ctx) + _CTX_OFFSET).value
    if not pointer or lib.get_options(pointer) != int(ctx.options):
        return None
    return int(pointer)


def mode(ctx: ssl.SSLContext) -> int | None:
    """The context's ``SSL_CTX_get_mode`` (None: not reachable): for tests and benchmarks."""
    lib = _lib()
    pointer = None if lib.error else _ssl_ctx(ctx, lib)
    return None if pointer is None else int(lib.ctrl(pointer, _SSL_CTRL_MODE, 0, None))


def tune(ctx: ssl.SSLContext, tuning: Tuning = _DEFAULT) -> str | None:
    """Apply ``tuning`` to ``ctx`` before its first connection; None when done, else why
    not (the context is then left exactly as it was)."""
    lib = _lib()
    if lib.error is not None:
        return lib.error
    pointer = _ssl_ctx(ctx, lib)
    if pointer is None:
        return "SSL_CTX not found where CPython keeps it"
    if tuning.suites is not None and lib.set_suites(pointer, tuning.suites.encode()) != 1:
        return f"OpenSSL refused the TLS 1.3 suites {tuning.suites!r}"
    if tuning.keep_buffers:
        lib.ctrl(pointer, _SSL_CTRL_CLEAR_MODE, SSL_MODE_RELEASE_BUFFERS, None)
    return None
