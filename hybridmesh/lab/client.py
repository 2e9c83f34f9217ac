"""Talks to a running lab daemon from the CLI (synchronous, over the API unix socket)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridmesh import env as hm_env
from hybridmesh._http.client import unix_request

__all__ = ["DaemonUnavailable", "LabClient", "daemon_pid", "pid_alive"]


class DaemonUnavailable(Exception):
    """No lab daemon answers on the API socket."""


@dataclass
class ApiResult:
    status: int
    body: Any


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def daemon_pid() -> int | None:
    """The recorded daemon PID if that process still exists."""
    try:
        pid = int((hm_env.STATE_DIR / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


class LabClient:
    def __init__(self, timeout: float = 10.0) -> None:
        self.socket = str(hm_env.api_socket())
        self.timeout = timeout

    def call(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> ApiResult:
        payload = json.dumps(body).encode() if body is not None else None
        try:
            status, _headers, raw = unix_request(
                self.socket, method, path, payload, timeout=timeout or self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise DaemonUnavailable(f"lab API at {self.socket} did not answer: {exc}") from exc
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        return ApiResult(status, data)

    def status(self) -> dict[str, Any]:
        result = self.call("GET", "/v1/lab/status")
        if result.status != 200:
            raise DaemonUnavailable(f"lab API answered {result.status}: {result.body}")
        data: dict[str, Any] = result.body
        return data

    def alive(self) -> bool:
        try:
            self.status()
        except DaemonUnavailable:
            return False
        return True
