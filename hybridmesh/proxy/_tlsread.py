"""Decrypted TLS reads into one shared buffer instead of a fresh 256 KiB ``bytes`` per read.

Why: for a plain :class:`asyncio.Protocol` uvloop's SSL transport decrypts each read with
``SSLObject.read(256 KiB)``, which allocates a 256 KiB ``bytes``, fills a few hundred bytes of
it and shrinks it. glibc serves that with mmap + mremap + munmap (page faults and three
syscalls per TLS record) unless its mmap threshold is raised (``_bench_tls --malloc-env``), and
even then each read carves and splits a 256 KiB heap chunk. For an
:class:`asyncio.BufferedProtocol` uvloop decrypts straight into the protocol's buffer.

:func:`read_buffered` puts a session that sits on a TLS transport behind
:class:`TlsReader`, which lends uvloop one module-wide 64 KiB buffer and hands the session an
exact-size ``bytes`` copy, so sessions keep their ``data_received`` interface. One buffer
serves every connection of the process: uvloop calls ``get_buffer``, decrypts and calls
``buffer_updated`` synchronously, and the copy is taken before the session runs, so no
other read can overwrite it in between. A session that later sets another protocol on the
transport (an upgrade) simply drops the adapter: its reads take the copying path again.
"""

from __future__ import annotations

import asyncio
from typing import Final

__all__ = ["BUFFER_SIZE", "TlsReader", "read_buffered"]

BUFFER_SIZE: Final = 64 * 1024  # four full TLS records per read callback
_BUFFER: Final = memoryview(bytearray(BUFFER_SIZE))


class TlsReader(asyncio.BufferedProtocol):
    """A :class:`asyncio.Protocol` seen by the transport as a buffered one."""

    __slots__ = ("_data_received", "protocol")

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol
        self._data_received = protocol.data_received

    def get_buffer(self, sizehint: int) -> memoryview:
        return _BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self._data_received(bytes(_BUFFER[:nbytes]))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.connection_lost(exc)

    def eof_received(self) -> None:
        """The session's answer is dropped: a TLS transport closes after the peer's EOF
        whatever it says, and uvloop logs a warning for each True (a session that keeps
        plaintext half-open connections open says True)."""
        self.protocol.eof_received()

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()


def read_buffered(transport: asyncio.BaseTransport) -> None:
    """Put the transport's current protocol behind a :class:`TlsReader` (once; plain
    protocols only: a session that is already buffered reads into its own buffer)."""
    protocol = transport.get_protocol()
    if isinstance(protocol, asyncio.BufferedProtocol) or not isinstance(
            protocol, asyncio.Protocol):
        return
    transport.set_protocol(TlsReader(protocol))
