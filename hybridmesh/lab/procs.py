"""Start processes inside a pod: in its cgroups and its network namespace.

The child joins the cgroups itself, between fork and exec (``preexec_fn`` writes ``0`` to each
``cgroup.procs``), so it is accounted and findable by the sweep from its first instruction —
even if the parent dies right after fork. It then execs ``ip netns exec <netns> <argv>``, which
enters the netns, bind-mounts /etc/netns/<netns>/{hosts,resolv.conf} over /etc in a private
mount namespace (the lab's Kubernetes-style DNS) and execs the program: one PID throughout, so
the PID the caller sees is the application's.

Running as another user goes through ``setpriv`` after ``ip netns exec`` (entering a netns needs
root; cgroup.procs is root's to write), again exec-only so the PID still is the app's.

``preexec_fn`` runs Python between fork and exec; the callable here only makes raw
``os.open``/``os.write`` calls on pre-encoded paths, the least a forked child of a threaded
parent can safely do.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hybridmesh.lab import _sh
from hybridmesh.lab._sh import LabError

__all__ = ["LabError", "exit_code", "run_in_pod", "spawn_in_cgroup", "spawn_in_pod"]


def _joiner(procs_files: Sequence[Path]) -> Callable[[], None]:
    """A preexec_fn that moves the calling (child) process into every cgroup."""
    for path in procs_files:
        if not path.exists():
            raise LabError(f"cgroup file {path} does not exist", "create the pod's cgroups first")
    encoded = [os.fsencode(p) for p in procs_files]

    def join() -> None:
        for path in encoded:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    return join


def _as_user(uid: int | None) -> list[str]:
    """``setpriv`` prefix dropping to ``uid`` (its primary group and supplementary groups)."""
    if uid is None:
        return []
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        groups = ["--regid", str(uid), "--clear-groups"]
    else:
        groups = ["--regid", str(entry.pw_gid), "--init-groups"]
    return [_sh.binary("setpriv"), "--reuid", str(uid), *groups, "--"]


def _in_netns(netns: str) -> list[str]:
    if not _sh.netns_exists(netns):
        raise LabError(f"netns {netns} does not exist", "is the pod up? `hybridmesh lab status`")
    return [_sh.binary("ip"), "netns", "exec", netns]


def _spawn_logged(
    argv: list[str],
    procs_files: Sequence[Path],
    env: Mapping[str, str] | None,
    log_path: Path,
) -> subprocess.Popen[bytes]:
    join = _joiner(procs_files)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            preexec_fn=join,  # noqa: PLW1509 - deliberate, see the module docstring
            start_new_session=True,
        )


def spawn_in_pod(
    netns: str,
    procs_files: Sequence[Path],
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    log_path: Path,
    *,
    uid: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the pod's netns and cgroups, in a new session, output appended to
    ``log_path``. The returned Popen's pid is the application's pid."""
    if not argv:
        raise LabError("no command to run", "give the workload a `command`")
    command = [*_in_netns(netns), *_as_user(uid), *argv]
    return _spawn_logged(command, procs_files, env, log_path)


def spawn_in_cgroup(
    procs_files: Sequence[Path],
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    log_path: Path,
    *,
    uid: int | None = None,
) -> subprocess.Popen[bytes]:
    """Like :func:`spawn_in_pod` but in the caller's network namespace (the lab daemon)."""
    if not argv:
        raise LabError("no command to run")
    return _spawn_logged([*_as_user(uid), *argv], procs_files, env, log_path)


def exit_code(returncode: int) -> int:
    """A shell-style exit status: a death by signal N becomes 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def run_in_pod(
    netns: str,
    procs_files: Sequence[Path],
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    uid: int | None = None,
) -> int:
    """Run ``argv`` in the pod in the foreground (``lab exec``): it shares the terminal, and a
    Ctrl-C reaches it; returns its exit status."""
    if not argv:
        raise LabError("no command to run", "usage: hybridmesh lab exec POD -- CMD [ARGS...]")
    command = [*_in_netns(netns), *_as_user(uid), *argv]
    proc = subprocess.Popen(
        command,
        env=dict(env) if env is not None else None,
        preexec_fn=_joiner(procs_files),  # noqa: PLW1509 - deliberate, see the module docstring
    )
    try:  # the child decides what ^C does; we just wait for its verdict
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to protect
        return exit_code(proc.wait())
    try:
        return exit_code(proc.wait())
    finally:
        signal.signal(signal.SIGINT, previous)
