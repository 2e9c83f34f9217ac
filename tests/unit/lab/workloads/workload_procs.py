"""Helpers that start the demo workloads as real processes on loopback (stopped by PID)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from typing import IO, Any


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    port: int

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self) -> Any:
        with urllib.request.urlopen(self.url("/_hm/stats"), timeout=5) as resp:
            return json.loads(resp.read())

    def terminate(self, timeout: float = 10) -> tuple[int, str]:
        """SIGTERM, then the exit code and whatever the process printed on stdout."""
        self.popen.send_signal(signal.SIGTERM)
        out, _ = self.popen.communicate(timeout=timeout)
        return self.popen.returncode, out


def _read_line(stream: IO[str], pattern: str, timeout: float) -> re.Match[str]:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise AssertionError(f"process printed nothing within {timeout}s")
    line = stream.readline()
    match = re.search(pattern, line)
    if match is None:
        raise AssertionError(f"unexpected start-up line {line!r}")
    return match


class Spawner:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def _popen(
        self, module: str, args: list[str], env: dict[str, str] | None
    ) -> subprocess.Popen[str]:
        popen = subprocess.Popen(
            [sys.executable, "-m", f"hybridmesh.lab.workloads.{module}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.procs.append(popen)
        return popen

    def httpsvc(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        popen = self._popen("httpsvc", ["--host", "127.0.0.1", "--port", "0", *args], env)
        assert popen.stdout is not None
        match = _read_line(popen.stdout, r" on 127\.0\.0\.1:(\d+) ", 20)
        return Proc(popen, int(match.group(1)))

    def loadgen(self, *args: str, stats: bool = False) -> Proc:
        extra = ["--stats-host", "127.0.0.1", "--stats-port", "0"] if stats else []
        popen = self._popen("loadgen", [*args, *extra], None)
        port = 0
        if stats:
            assert popen.stderr is not None
            port = int(_read_line(popen.stderr, r"stats on 127\.0\.0\.1:(\d+)", 20).group(1))
        return Proc(popen, port)

    def cleanup(self) -> None:
        for popen in self.procs:
            if popen.poll() is None:
                popen.kill()
            popen.communicate(timeout=10)
