"""Processes a proxy netns test starts, tracked by name and stopped by PID (never by pattern).

Shared by meshnet.py (plaintext proxies) and mtlsnet.py (the mTLS pair).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hybridmesh.lab import _sh


@dataclass
class NetProcesses:
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def spawn(self, name: str, netns: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            _sh.in_netns(netns, list(argv)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def python(self, name: str, netns: str, *args: str) -> subprocess.Popen[bytes]:
        return self.spawn(name, netns, [sys.executable, *args])

    def stop(self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal ``name``; its exit code, or None if it had to be SIGKILLed after ``timeout``."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
            return None

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name, sig=signal.SIGKILL)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""
