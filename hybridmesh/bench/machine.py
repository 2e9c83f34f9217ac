"""What the numbers were measured on: the machine, the software versions, the git commit.

A benchmark figure without its machine is an anecdote; every results.json carries these.
Each probe degrades to ``None``/"unknown" rather than failing the run (a missing ``git`` or
an exported tree still gets a report).
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from hybridmesh.bench.model import MachineDoc, VersionsDoc

__all__ = ["loadavg", "machine", "versions"]


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> MachineDoc:
    return MachineDoc(
        kernel=platform.release(),
        os=_os_name(),
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory_bytes=_memory_bytes(),
        loadavg_start=loadavg(),
    )


def _run(argv: list[str], cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, check=False, cwd=cwd
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 and not done.stdout:
        return None
    return (done.stdout or done.stderr).strip()


def _git(repo: Path) -> tuple[str | None, bool | None]:
    commit = _run(["git", "rev-parse", "HEAD"], repo)
    if not commit:
        return None, None
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], repo)
    return commit, bool(dirty)


def _first_line_version(argv: list[str]) -> str | None:
    out = _run(argv)
    return out.splitlines()[0] if out else None


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def versions(envoy: str | None) -> VersionsDoc:
    repo = Path(__file__).resolve().parents[2]
    commit, dirty = _git(repo)
    return VersionsDoc(
        python=platform.python_version(),
        hybridmesh=_package_version("hybridmesh"),
        envoy=envoy,
        git_commit=commit,
        git_dirty=dirty,
        wrk=_first_line_version(["wrk", "-v"]),
        h2load=_first_line_version(["h2load", "--version"]),
    )
