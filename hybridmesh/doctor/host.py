"""Everything a probe may touch on the host, injectable, plus the state of one check run.

Probes never call ``os``, ``subprocess`` or ``ctypes`` directly: they go through :class:`Host`,
whose defaults are the real system and whose fields a unit test replaces with fakes (a
mountinfo file in a temp dir, a scripted command runner, a fake ``libbpf``).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from hybridmesh import env
from hybridmesh.doctor.model import ProbeError

__all__ = ["CommandResult", "Host", "Runner", "Session", "run_command"]

_TIMEOUT = 10.0
_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        """The most useful one-line reason a command failed."""
        text = (self.stderr or self.stdout).strip()
        return text.splitlines()[-1] if text else f"exit status {self.returncode}"


Runner = Callable[[Sequence[str], str | None], CommandResult]


def run_command(argv: Sequence[str], stdin: str | None = None) -> CommandResult:
    """Run ``argv`` with a timeout; a missing binary or a hang is a result, not an exception."""
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except FileNotFoundError:
        return CommandResult(127, stderr=f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(124, stderr=f"{argv[0]}: timed out after {_TIMEOUT:.0f}s")
    return CommandResult(done.returncode, done.stdout, done.stderr)


def _which(name: str) -> str | None:
    """``shutil.which`` that also looks in the sbin directories a non-login root shell may lack."""
    return shutil.which(name) or shutil.which(name, path=_SBIN_PATH)


def _kernel_release() -> str:
    return os.uname().release


@dataclass(frozen=True)
class Host:
    """The host as probes see it. Every default is the real machine."""

    mountinfo: Path = Path("/proc/self/mountinfo")
    btf: Path = Path("/sys/kernel/btf/vmlinux")
    bpffs: Path = env.BPFFS
    pid: int = field(default_factory=os.getpid)
    euid: Callable[[], int] = os.geteuid
    kernel_release: Callable[[], str] = _kernel_release
    which: Callable[[str], str | None] = _which
    run: Runner = run_command
    import_module: Callable[[str], object] = importlib.import_module
    load_library: Callable[[str], Any] = ctypes.CDLL
    close_fd: Callable[[int], None] = os.close


class Session:
    """One run of the checks: the host, plus a scratch network namespace shared by the
    network checks (created on first use, deleted on close) so they test the same namespace
    the way the lab will use one: veth pairs and nat rules *inside* it."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._netns: str | None = None

    @property
    def netns_name(self) -> str:
        return f"{env.PREFIX}check-{self.host.pid}"

    def binary(self, name: str) -> str:
        """Absolute path of ``name`` when found, so a PATH without sbin does not matter."""
        return self.host.which(name) or name

    def ip(self, *args: str, stdin: str | None = None) -> CommandResult:
        return self.host.run([self.binary("ip"), *args], stdin)

    def scratch_netns(self) -> str:
        """The scratch namespace's name, creating it if needed; :class:`ProbeError` if not."""
        if self._netns is None:
            name = self.netns_name
            made = self.ip("netns", "add", name)
            if not made.ok:
                raise ProbeError(f"cannot create network namespace {name}: {made.why()}")
            self._netns = name
        return self._netns

    def close(self) -> None:
        """Delete the scratch namespace (and with it every link and rule made inside it)."""
        if self._netns is not None:
            self.ip("netns", "del", self._netns)
            self._netns = None

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
