"""The test bed: the bench's lab (up, Envoy injected, down) and running tools in its pods.

It is a thin layer over the lab's own functions (``lab_up``/``lab_down``, ``spawn_in_pod``,
the pod cgroups): the bench runs exactly what ``hybridmesh lab`` runs, so what it measures
is the lab a user gets.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridmesh import env as hm_env
from hybridmesh.bench.envoy_certs import BenchCA, write_pod_tls
from hybridmesh.bench.envoy_config import EnvoyPod, pod_from_status, services_from_status
from hybridmesh.bench.envoy_sidecar import (
    EnvoyError,
    EnvoySidecar,
    envoy_binary,
    envoy_uid,
    tls_dir,
)
from hybridmesh.bench.envoy_tls import EnvoyTls, spiffe_id
from hybridmesh.bench.scenarios import Contender
from hybridmesh.bench.topology import TRUST_DOMAIN, PodRole, namespace_of, render_topology
from hybridmesh.lab import names, netns, procs, runner
from hybridmesh.lab._sh import LabError
from hybridmesh.lab.cgroups import CgroupLayout, PodCgroup, detect_layout
from hybridmesh.lab.client import LabClient, daemon_pid
from hybridmesh.lab.lab import SUPPORTED_PLACEMENTS

__all__ = ["BedError", "TestBed", "ToolResult", "stop_process", "unavailable_contenders"]

_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BedError(Exception):
    """The test bed failed; ``interrupted`` when someone else stopped our lab (retryable)."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        interrupted: bool = False,
        busy: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.interrupted = interrupted
        self.busy = busy  # another lab holds the machine


_INTERRUPTED = "the lab daemon exited during start-up"
"""runner.lab_up's message when the daemon died before Ready: killed or told to shut down
(another user's `lab down` or test sweep), as opposed to a lab that reported Failed."""


def unavailable_contenders(contenders: Sequence[Contender]) -> dict[str, str]:
    """Contenders this build or machine cannot run, with the reason."""
    out: dict[str, str] = {}
    for c in contenders:
        if c.placement not in SUPPORTED_PLACEMENTS:
            out[c.name] = f"the lab cannot realize placement {c.placement!r} yet"
        elif c.proxy == "envoy":
            try:
                envoy_binary()
            except EnvoyError as exc:
                out[c.name] = f"{exc.message} ({exc.hint})"
    return out


@dataclass(frozen=True, slots=True)
class ToolResult:
    returncode: int
    output: str  # stdout and stderr, interleaved
    seconds: float


@dataclass
class TestBed:
    """The lab with every contender's namespace, and the Envoys the bench injected."""

    contenders: Sequence[Contender]
    workdir: Path
    envoy_concurrency: int = 2
    scenarios: Sequence[str] = ()  # those whose extra pods the topology must hold
    layout: CgroupLayout = field(default_factory=detect_layout)
    status: dict[str, Any] = field(default_factory=dict)
    envoys: dict[str, EnvoySidecar] = field(default_factory=dict)  # pod key -> Envoy
    envoy_ca: BenchCA | None = None  # signs the mTLS Envoys' SVIDs (envoy_certs.py)
    started: bool = False  # lab_up was attempted: down() has something of ours to remove
    daemon: int | None = None  # the pid of *our* lab's daemon
    _env: dict[str, dict[str, str]] = field(default_factory=dict)
    _seq: int = 0

    __test__ = False  # not a pytest test class, whatever its name says

    def up(self, progress: Callable[[str], None] | None = None) -> None:
        """Bring the lab up; inject Envoy into the pods of the Envoy contenders' namespaces."""
        if daemon_pid() is not None:
            raise BedError(
                "a lab is already running; the bench needs the machine's lab to itself",
                "`hybridmesh lab down` first (it removes every hm- object on this machine), "
                "or let the bench wait for it: --wait SECONDS",
                busy=True,
            )
        topology = self.workdir / "topology.yaml"
        topology.write_text(render_topology(self.contenders, self.scenarios))
        self.started = True
        try:
            self.status = runner.lab_up(topology, timeout=180)
            self.daemon = daemon_pid()
        except runner.LabUpError as exc:
            where = self.workdir / "lab-logs"
            raise BedError(
                exc.message,
                f"the lab's logs are kept in {where}",
                interrupted=exc.message.startswith(_INTERRUPTED),
            ) from None
        except (subprocess.SubprocessError, OSError, LabError) as exc:
            # the daemon could not even start: its cgroup or state dir vanished under it, as
            # when another user's sweep runs at the same moment
            raise BedError(f"lab up failed: {exc}", interrupted=True) from None
        if any(c.proxy == "envoy" for c in self.contenders):
            self._inject_envoy(progress)

    def apply(self, text: str, progress: Callable[[str], None] | None = None) -> None:
        """``lab apply`` a change while the bench runs (the scale scenario's pod count), then
        bring the injected Envoys in line: new pods get one, pods whose services or address
        changed get theirs restarted with the new bootstrap (the bench's stand-in for xDS)."""
        self._seq += 1
        path = self.workdir / f"topology-apply-{self._seq}.yaml"
        path.write_text(text)
        try:
            runner.lab_apply(path)
            self.status = LabClient().call("GET", "/v1/lab/status").body
            self._env.clear()  # replaced pods have new addresses
        except runner.LabUpError as exc:
            raise BedError(f"lab apply failed: {exc.message}", exc.hint) from None
        if any(c.proxy == "envoy" for c in self.contenders):
            self._inject_envoy(progress)

    def intact(self) -> bool:
        """True while the lab we brought up is still the one running."""
        return self.daemon is not None and daemon_pid() == self.daemon

    def rebuild(self, progress: Callable[[str], None] | None = None, wait_s: float = 900) -> None:
        """After someone else took our lab down: wait until the machine has no lab, then
        bring ours up again (other engineers' tests share the machine's hm- namespace)."""
        self.envoys.clear()
        self._env.clear()
        self.started = False
        deadline = time.monotonic() + wait_s
        while True:
            if daemon_pid() is None:
                try:
                    self.up(progress)
                    return
                except BedError as exc:
                    if not (exc.interrupted or exc.busy) or time.monotonic() >= deadline:
                        raise
            elif time.monotonic() >= deadline:
                raise BedError(
                    f"our lab was taken down and another one kept the machine for {wait_s:.0f}s",
                    "run the bench when no other lab or lab test is running",
                )
            if progress:
                progress("another lab holds the machine: waiting for it")
            time.sleep(2.0)

    def _inject_envoy(self, progress: Callable[[str], None] | None) -> None:
        binary = envoy_binary()
        for contender in self.contenders:
            if contender.proxy == "envoy":
                self._inject_envoy_into(contender, binary, progress)

    def _inject_envoy_into(
        self, contender: Contender, binary: Path, progress: Callable[[str], None] | None
    ) -> None:
        ns = namespace_of(contender.name)
        services = tuple(services_from_status(self.status, ns))
        present = {f"{ns}/{p['name']}" for p in self.status["pods"] if p["namespace"] == ns}
        mine = [k for k in self.envoys if k.startswith(f"{ns}/")]  # not the other contenders'
        for key in [k for k in mine if k not in present]:  # its pod was removed
            with contextlib.suppress(Exception):
                self.envoys.pop(key).stop()
        for pod in self.status["pods"]:
            if pod["namespace"] != ns:
                continue
            key, spec = f"{ns}/{pod['name']}", pod_from_status(pod, self.status)
            old = self.envoys.get(key)
            running = old is not None and old.process is not None and old.process.poll() is None
            if old is not None and running and old.pod == spec and old.services == services:
                continue  # unchanged since it started
            if old is not None:
                old.stop()
            if progress:
                progress(f"starting Envoy in {key}")
            sidecar = EnvoySidecar(
                spec, services, PodCgroup(ns, pod["name"], self.layout),
                concurrency=self.envoy_concurrency,
                tls=self._envoy_tls(spec, binary) if contender.mtls else None,
            )  # fmt: skip
            self.envoys[key] = sidecar
            try:
                sidecar.start(binary, self.env_for(PodRole(ns, pod["name"])))
            except EnvoyError as exc:
                raise BedError(exc.message, exc.hint) from None

    def _envoy_tls(self, pod: EnvoyPod, binary: Path) -> EnvoyTls:
        """A fresh SVID for the pod's service account from the bench CA (made once)."""
        if self.envoy_ca is None:
            self.envoy_ca = BenchCA(TRUST_DOMAIN)
        sid = spiffe_id(TRUST_DOMAIN, pod.namespace, pod.service_account)
        return write_pod_tls(
            self.envoy_ca, tls_dir(pod.namespace, pod.name), sid,
            owner_uid=envoy_uid(binary), permissive=True,  # the bench mesh is PERMISSIVE
        )  # fmt: skip

    def down(self) -> None:
        """Stop the Envoys, keep the lab's logs in ``workdir/lab-logs``, take the lab down."""
        if not self.started:
            return
        self.started = False
        for sidecar in self.envoys.values():
            with contextlib.suppress(Exception):
                sidecar.stop()
        now = daemon_pid()
        if now is not None and self.daemon is not None and now != self.daemon:
            return  # ours is gone and someone else's lab runs now: not ours to remove
        _keep_logs(self.workdir / "lab-logs")
        runner.lab_down()

    def pod(self, role: PodRole) -> dict[str, Any]:
        for pod in self.status["pods"]:
            if pod["namespace"] == role.namespace and pod["name"] == role.name:
                found: dict[str, Any] = pod
                return found
        raise BedError(f"no pod {role.key} in the bench lab")

    def env_for(self, role: PodRole) -> dict[str, str]:
        """The environment the lab gives the pod's processes, venv first on PATH."""
        if role.key not in self._env:
            detail = LabClient().call("GET", f"/v1/lab/pods/{role.key}").body
            base = {
                "PATH": f"{Path(sys.executable).parent}:{_SYSTEM_PATH}",
                "HOME": "/tmp",
                "LANG": os.environ.get("LANG", "C.UTF-8"),
                "PYTHONUNBUFFERED": "1",
            }
            self._env[role.key] = {**base, **(detail or {}).get("env", {})}
        return self._env[role.key]

    def spawn(
        self, role: PodRole, argv: Sequence[str], name: str
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start ``argv`` in the pod (its netns, its app cgroup leaf); output to a log file."""
        self._seq += 1
        log = self.workdir / "logs" / f"{self._seq:04d}-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cg = PodCgroup(role.namespace, role.name, self.layout)
        proc = procs.spawn_in_pod(
            names.pod_netns(role.namespace, role.name),
            cg.procs_files("app"),
            list(argv),
            self.env_for(role),
            log,
        )
        return proc, log

    def run_tool(self, role: PodRole, argv: Sequence[str], name: str, timeout: float) -> ToolResult:
        """Run ``argv`` in the pod to completion (killed after ``timeout``)."""
        started = time.monotonic()
        proc, log = self.spawn(role, argv, name)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BedError(f"{argv[0]} in {role.key} did not finish in {timeout:.0f}s") from None
        return ToolResult(code, log.read_text(errors="replace"), time.monotonic() - started)

    def http_text(self, role: PodRole, port: int, path: str, timeout: float = 2.0) -> str:
        """GET ``path`` from 127.0.0.1:``port`` inside the pod (loopback: never captured)."""
        sock = netns.connect(names.pod_netns(role.namespace, role.name), "127.0.0.1", port, timeout)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.sock = sock
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise BedError(f"GET {path} in {role.key} answered {response.status}")
        return body.decode(errors="replace")

    def http_get(self, role: PodRole, port: int, path: str, timeout: float = 2.0) -> Any:
        """Like :meth:`http_text`, JSON-decoded."""
        return json.loads(self.http_text(role, port, path, timeout))

    def envoy(self, role: PodRole) -> EnvoySidecar | None:
        return self.envoys.get(role.key)


def _keep_logs(target: Path) -> None:
    """Copy the daemon's and the pods' logs out of the state dir the sweep deletes."""
    sources = [hm_env.STATE_DIR / "daemon.log", *sorted((hm_env.STATE_DIR / "logs").glob("*"))]
    for src in sources:
        with contextlib.suppress(OSError):
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target / src.name)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``grace``; the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
