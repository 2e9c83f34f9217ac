"""Hitless upgrade: a new node proxy takes the listening sockets from the old one (SCM_RIGHTS).

Envoy's hot restart, reduced to what a node proxy needs. The old process serves a unix socket
(``--handoff PATH``, 0600). A successor started with ``--takeover PATH``:

1. connects and sends :data:`MAGIC`;
2. receives one message: JSON ``{"names": ["outbound", "tunnel"], "pid": <old pid>}`` with the
   listening sockets attached as SCM_RIGHTS file descriptors (the *same* kernel sockets: the
   accept queue is shared, so no SYN is lost or refused during the switch);
3. starts accepting on them, then sends ``ok``;
4. the old process then closes its copies (stops accepting), gives up its admin port, tells
   tunnel peers GOAWAY (they open new streams to the successor) and *keeps relaying every
   established connection* until each ends (or ``--drain-timeout``), then exits.

Nothing established is reset: a connection belongs to the process that accepted it for its
whole life. (ztunnel closes connections on upgrade; SO_REUSEPORT alone would drop whatever sits
in the old socket's accept queue when it closes.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["MAGIC", "HandoffError", "HandoffServer", "Takeover", "take_over"]

log = logging.getLogger(__name__)

MAGIC: Final = b"hm-nodeproxy-takeover v1\n"
OK: Final = b"ok\n"
_MAX_FDS: Final = 16


class HandoffError(Exception):
    """The takeover could not happen; the old process keeps serving."""


@dataclass
class Takeover:
    """The successor's side: the inherited sockets, and the confirmation still to send."""

    sockets: dict[str, socket.socket]
    old_pid: int
    _channel: socket.socket

    def confirm(self) -> None:
        """Tell the old process we are accepting: it stops accepting and drains."""
        try:
            self._channel.sendall(OK)
        finally:
            self._channel.close()


def take_over(path: Path, timeout: float = 10.0) -> Takeover:
    """Connect to the old process's handoff socket and receive its listeners (blocking)."""
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel.settimeout(timeout)
    try:
        channel.connect(os.fspath(path))
        channel.sendall(MAGIC)
        message, fds, _flags, _addr = socket.recv_fds(channel, 65536, _MAX_FDS)
    except OSError as exc:
        channel.close()
        raise HandoffError(f"cannot take over from {path}: {exc}") from None
    try:
        doc = json.loads(message)
        names = [str(n) for n in doc["names"]]
        pid = int(doc["pid"])
    except (ValueError, KeyError, TypeError):
        for fd in fds:
            os.close(fd)
        channel.close()
        raise HandoffError(f"unusable handoff message from {path}") from None
    if len(names) != len(fds):
        for fd in fds:
            os.close(fd)
        channel.close()
        raise HandoffError(f"handoff sent {len(fds)} sockets for names {names}")
    return Takeover({n: socket.socket(fileno=fd) for n, fd in zip(names, fds, strict=True)},
                    pid, channel)


class HandoffServer:
    """The old process's side: hands its listeners to one successor, then drains."""

    def __init__(self, path: Path, sockets: Callable[[], dict[str, socket.socket]],
                 on_handed_over: Callable[[], Awaitable[None]]) -> None:
        self.path = path
        self._sockets = sockets
        self._on_handed_over = on_handed_over
        self._server: asyncio.AbstractServer | None = None
        self.done = False

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()
        old_umask = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(self._serve, os.fspath(self.path))
        finally:
            os.umask(old_umask)

    def close(self) -> None:
        """Stop listening. The path is left alone: a successor has bound it anew by now."""
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            magic = await asyncio.wait_for(reader.readexactly(len(MAGIC)), 10.0)
            if magic != MAGIC or self.done:
                return
            sockets = self._sockets()
            message = json.dumps({"names": list(sockets), "pid": os.getpid()}).encode()
            # asyncio hands out a TransportSocket wrapper; sendmsg wants the real socket
            fd = os.dup(writer.get_extra_info("socket").fileno())
            with socket.socket(fileno=fd) as raw:
                socket.send_fds(raw, [message], [s.fileno() for s in sockets.values()])
            ok = await asyncio.wait_for(reader.readexactly(len(OK)), 30.0)
            if ok != OK:
                return
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.warning("takeover attempt failed (%s); still serving", exc)
            return
        finally:
            writer.close()
        self.done = True
        log.info("listeners handed over; draining established connections")
        await self._on_handed_over()
