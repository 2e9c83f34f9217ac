"""The one place the lab runs external commands (``ip``, ``iptables-restore``, ``nsenter``).

Every failure becomes a :class:`LabError` naming the command that failed and its stderr, so a
broken ``lab up`` says *what* the kernel refused rather than dumping a traceback.

``ip -batch`` is used wherever several changes go to one namespace: one fork/exec for a whole
pod or node instead of one per address, link and route keeps a 64-pod lab quick to build.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "NETNS_DIR",
    "LabError",
    "binary",
    "in_netns",
    "ip",
    "ip_batch",
    "ip_json",
    "iptables_restore",
    "iptables_save",
    "netns_exists",
    "run",
    "sysctl",
]

NETNS_DIR = Path("/run/netns")
"""Where ``ip netns add`` pins named network namespaces."""

_TIMEOUT = 30.0


class LabError(Exception):
    """A lab operation failed; ``hint`` says what the user can do about it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


def binary(name: str) -> str:
    """Absolute path of a system tool (sbin included even when PATH lacks it)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise LabError(f"{name!r} is not installed", f"install it (e.g. apt-get install {name})")
    return found


def run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    """Run ``argv``, return its stdout; raise :class:`LabError` (with stderr) if it fails."""
    cmd = [binary(argv[0]), *argv[1:]]
    try:
        proc = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(argv)}` did not finish in {_TIMEOUT:.0f}s") from None
    if check and proc.returncode != 0:
        raise LabError(
            f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()}",
            _hint_for(proc.stderr),
        )
    return proc.stdout


def _hint_for(stderr: str) -> str | None:
    if "Operation not permitted" in stderr or "Permission denied" in stderr:
        return "the lab needs root (CAP_NET_ADMIN / CAP_SYS_ADMIN): run it with sudo"
    if "No such file or directory" in stderr and "netns" in stderr:
        return "a lab namespace is missing: `hybridmesh lab down` then `lab up` rebuilds it"
    return None


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed to run inside ``netns`` (only the net namespace: cheaper than
    ``ip netns exec``, which also remounts /sys and bind-mounts /etc/netns files)."""
    if netns is None:
        return list(argv)
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--", binary(argv[0]), *argv[1:]]


def ip(netns: str | None, *args: str, check: bool = True) -> str:
    """One ``ip [-n netns] ARGS`` command."""
    return run(["ip", *(["-n", netns] if netns else []), *args], check=check)


def ip_json(netns: str | None, *args: str) -> list[dict[str, Any]]:
    """``ip -j`` output parsed (an empty list when the command prints nothing)."""
    out = run(["ip", "-j", *(["-n", netns] if netns else []), *args])
    data = json.loads(out) if out.strip() else []
    return [d for d in data if isinstance(d, dict)]


def ip_batch(netns: str | None, lines: Sequence[str], *, tolerate: Collection[int] = ()) -> None:
    """Run many ``ip`` commands in one process (``ip -batch -``).

    ``tolerate`` holds the (0-based) indexes of lines allowed to fail — "delete a stale link
    if there is one" — so a reconcile stays one exec; any other failing line raises.
    """
    if not lines:
        return
    force = ["-force"] if tolerate else []
    argv = ["ip", *force, *(["-n", netns] if netns else []), "-batch", "-"]
    try:
        run(argv, stdin="\n".join(lines) + "\n")
    except LabError as exc:
        failed = {int(n) - 1 for n in _FAILED_LINE.findall(exc.message)}
        if not failed or not failed <= set(tolerate):
            where = f" in netns {netns}" if netns else ""
            bad = "; ".join(lines[i] for i in sorted(failed - set(tolerate)) if i < len(lines))
            raise LabError(f"ip -batch{where} failed at `{bad}`: {exc.message}", exc.hint) from None


_FAILED_LINE = re.compile(r"Command failed -:(\d+)")


def sysctl(netns: str | None, settings: dict[str, str]) -> None:
    """Write net sysctls as seen from ``netns`` (net.* sysctls are per network namespace)."""
    if settings:
        run(in_netns(netns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())]))


def iptables_save(netns: str | None) -> str:
    return run(in_netns(netns, ["iptables-save"]))


def iptables_restore(netns: str | None, payload: str) -> None:
    """Apply ``payload`` with ``iptables-restore --noflush``: one transaction, so a payload with
    an error changes nothing."""
    run(in_netns(netns, ["iptables-restore", "--noflush"]), stdin=payload)
