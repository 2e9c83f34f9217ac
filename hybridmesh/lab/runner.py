"""What the `lab` CLI commands do, kept out of the CLI so tests and `demo` call the same code.

``lab_up`` validates locally first (so a typo is a ``FILE:LINE`` error before anything is
created), starts the daemon detached and waits for it to report the lab ready, failing early
with the pod's last log lines if a pod crash-loops instead of hanging until the timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridmesh import env as hm_env
from hybridmesh.lab import cleanup, names, procs
from hybridmesh.lab.cgroups import PodCgroup, daemon_procs_files, detect_layout
from hybridmesh.lab.client import DaemonUnavailable, LabClient, daemon_pid, pid_alive
from hybridmesh.lab.daemon import write_sources
from hybridmesh.lab.lab import PlacementError, check_placements, pod_log_path
from hybridmesh.resources import (
    DEFAULT_TOPOLOGY_NAME,
    ResourceError,
    build_topology,
    load_documents,
)

__all__ = ["LabUpError", "lab_apply", "lab_down", "lab_exec", "lab_up", "log_path_of", "print_log"]

CRASHLOOP_RESTARTS = 3


@dataclass
class LabUpError(Exception):
    message: str
    hint: str | None = None


Progress = Callable[[str | None], None]


def _read_topology(file: Path | None) -> tuple[str, str]:
    if file is None:
        from importlib.resources import files

        text = (files("hybridmesh.resources") / "topologies" / "demo.yaml").read_text()
        return DEFAULT_TOPOLOGY_NAME, text
    try:
        return str(file), file.read_text()
    except OSError as exc:
        raise LabUpError(f"cannot read {file}: {exc.strerror}", "check the path") from None


def _validate(source: str, text: str) -> None:
    try:
        topology = build_topology(load_documents(text, source))
        check_placements(topology)
    except ResourceError as exc:
        raise LabUpError(
            f"{source} is not valid:\n{exc}", f"fix it, then `hybridmesh validate {source}`"
        ) from None
    except PlacementError as exc:
        raise LabUpError(str(exc)) from None


def lab_up(
    file: Path | None, timeout: float = 120.0, progress: Progress | None = None
) -> dict[str, Any]:
    source, text = _read_topology(file)
    _validate(source, text)
    pid = daemon_pid()
    if pid is not None:
        raise LabUpError(
            f"a lab is already running (daemon pid {pid})",
            "change it with `hybridmesh lab apply FILE`, or `hybridmesh lab down` first",
        )
    if cleanup.leftovers():
        cleanup.sweep()  # a previous lab crashed: reclaim its objects before reusing the names
    hm_env.STATE_DIR.mkdir(parents=True, exist_ok=True)
    (hm_env.STATE_DIR / "logs").mkdir(exist_ok=True)
    write_sources([{"source": source, "text": text}])
    try:
        proc = procs.spawn_in_cgroup(
            daemon_procs_files(detect_layout()),
            [sys.executable, "-m", "hybridmesh.lab.daemon"],
            dict(os.environ),
            hm_env.STATE_DIR / "daemon.log",
        )
    except (OSError, subprocess.SubprocessError) as exc:  # e.g. its cgroup vanished meanwhile
        raise LabUpError(
            f"cannot start the lab daemon: {exc}", "run `hybridmesh lab down`, then `lab up` again"
        ) from None
    (hm_env.STATE_DIR / "daemon.pid").write_text(f"{proc.pid}\n")
    try:
        return _wait_ready(proc.pid, timeout, progress)
    finally:
        if progress:
            progress(None)


def _wait_ready(pid: int, timeout: float, progress: Progress | None) -> dict[str, Any]:
    client = LabClient(timeout=5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise LabUpError(
                "the lab daemon exited during start-up:\n"
                + _tail(hm_env.STATE_DIR / "daemon.log", 15),
                "run `hybridmesh lab down` to clean up, then fix the cause above",
            )
        try:
            st = client.status()
        except DaemonUnavailable:
            time.sleep(0.05)
            continue
        if st["phase"] == "Ready":
            return st
        if st["phase"] == "Failed":
            raise LabUpError(
                f"lab up failed: {st['message']}",
                "see `hybridmesh lab status`; `hybridmesh lab down` removes what was made",
            )
        _check_crashloops(st)
        if progress:
            ready = sum(1 for p in st["pods"] if p["ready"] or p["phase"] == "Succeeded")
            progress(f"pods ready {ready}/{len(st['pods'])}")
        time.sleep(0.1)
    raise LabUpError(
        f"the lab was not ready after {timeout:.0f}s",
        "see `hybridmesh lab status` and `hybridmesh lab logs POD`",
    )


def _check_crashloops(st: dict[str, Any]) -> None:
    for p in st["pods"]:
        if p["restarts"] >= CRASHLOOP_RESTARTS and not p["ready"]:
            log = _tail(pod_log_path(p["namespace"], p["name"]), 10)
            raise LabUpError(
                f"pod {p['namespace']}/{p['name']} keeps crashing ({p['restarts']} restarts, "
                f"last exit code {p['lastExitCode']}); its last log lines:\n{log}",
                "fix the workload's command, then `hybridmesh lab down` and up again",
            )


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def lab_apply(file: Path) -> dict[str, Any]:
    source, text = _read_topology(file)
    client = LabClient(timeout=180)
    try:
        result = client.call("POST", "/v1/lab/apply", {"source": source, "text": text})
    except DaemonUnavailable:
        raise LabUpError("no lab is running", "start one with `hybridmesh lab up [FILE]`") from None
    if result.status == 422:
        lines = [
            f"{p['file']}:{p['line']}: {p['message']}" if "file" in p else p["message"]
            for p in result.body["problems"]
        ]
        raise LabUpError("the change was refused; nothing was changed:\n" + "\n".join(lines))
    if result.status != 200:
        raise LabUpError(f"lab API answered {result.status}: {result.body}")
    data: dict[str, Any] = result.body
    return data


def resolve_pod(pod: str) -> dict[str, Any]:
    """Find ``[namespace/]pod``; a bare name must be unique across namespaces."""
    try:
        st = LabClient().status()
    except DaemonUnavailable:
        raise LabUpError("no lab is running", "start one with `hybridmesh lab up [FILE]`") from None
    ns, _, name = pod.rpartition("/")
    matches = [p for p in st["pods"] if p["name"] == name and (not ns or p["namespace"] == ns)]
    if len(matches) == 1:
        found: dict[str, Any] = matches[0]
        return found
    if not matches:
        known = ", ".join(f"{p['namespace']}/{p['name']}" for p in st["pods"])
        raise LabUpError(f"no pod {pod!r} in the lab", f"pods are: {known}")
    raise LabUpError(
        f"pod name {name!r} exists in several namespaces",
        "qualify it: " + ", ".join(f"{p['namespace']}/{p['name']}" for p in matches),
    )


def lab_exec(pod: str, argv: list[str]) -> int:
    p = resolve_pod(pod)
    detail = LabClient().call("GET", f"/v1/lab/pods/{p['namespace']}/{p['name']}").body
    cg = PodCgroup(p["namespace"], p["name"], detect_layout())
    env = {**detail["env"], "TERM": os.environ.get("TERM", "dumb")}
    return procs.run_in_pod(
        names.pod_netns(p["namespace"], p["name"]), cg.procs_files("app"), argv, env
    )


def log_path_of(pod: str) -> Path:
    p = resolve_pod(pod)
    return pod_log_path(p["namespace"], p["name"])


def print_log(path: Path, follow: bool, tail: int) -> None:
    try:
        with path.open("rb") as fh:
            data = fh.read()
            lines = data.splitlines(keepends=True)
            sys.stdout.buffer.write(b"".join(lines[-tail:] if tail >= 0 else lines))
            sys.stdout.flush()
            while follow:
                chunk = fh.read()
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)
    except FileNotFoundError:
        raise LabUpError(f"no log yet at {path}") from None
    except KeyboardInterrupt:
        pass


def lab_down(grace: float = 15.0) -> dict[str, Any]:
    """Ask the daemon to stop pods gracefully, then sweep everything with the hm- prefix."""
    pid = daemon_pid()
    if pid is not None:
        with contextlib.suppress(DaemonUnavailable):
            LabClient(timeout=5).call("POST", "/v1/lab/shutdown")
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when the caller started it (tests, demo)
    report = cleanup.sweep()
    return report.to_json()
