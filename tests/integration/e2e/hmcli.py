"""Running the real `hybridmesh` CLI from the e2e tests (one helper, shared by every module)."""

from __future__ import annotations

import subprocess
import sys

HM = [sys.executable, "-m", "hybridmesh"]


def hm(*args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run `hybridmesh ARGS`; with ``check`` a non-zero exit fails the test with its output."""
    proc = subprocess.run(
        [*HM, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"hybridmesh {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc
