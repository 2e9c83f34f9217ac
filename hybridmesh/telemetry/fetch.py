"""Read a lab pod's proxy metrics from the host, through a socket made inside the pod's node.

Pod addresses exist only inside the lab's network namespaces, so the CLI cannot simply dial
them: ``hybridmesh.lab.netns.connect`` creates the socket inside the node's netns (from a helper
thread, never switching the CLI's own thread) and hands back a connected blocking socket, over
which a plain HTTP/1.1 GET runs.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable
from typing import Final

from hybridmesh.lab import names, netns

__all__ = ["ADMIN_PORT", "METRICS_PATH", "Connect", "FetchError", "fetch_metrics", "http_get"]

ADMIN_PORT: Final = 15020
METRICS_PATH: Final = "/metrics"
_MAX_BODY = 64 * 1024 * 1024  # a runaway exposition should fail, not eat the CLI's memory

Connect = Callable[[str, str, int, float], socket.socket]
"""``(netns, ip, port, timeout) -> connected socket``, as ``hybridmesh.lab.netns.connect``."""


class FetchError(Exception):
    """The proxy could not be reached or did not answer 200 with a body."""


def http_get(sock: socket.socket, host: str, path: str, timeout: float) -> str:
    """GET ``path`` over a connected socket (which this closes); the body as text."""
    sock.settimeout(timeout)
    conn = http.client.HTTPConnection(host, timeout=timeout)
    conn.sock = sock
    try:
        conn.request("GET", path, headers={"Accept": "text/plain", "Connection": "close"})
        response = conn.getresponse()
        body = response.read(_MAX_BODY + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"GET http://{host}{path}: {_describe(exc)}") from exc
    finally:
        conn.close()
    if response.status != 200:
        raise FetchError(f"GET http://{host}{path}: HTTP {response.status} {response.reason}")
    if len(body) > _MAX_BODY:
        raise FetchError(f"GET http://{host}{path}: body larger than {_MAX_BODY} bytes")
    return body.decode("utf-8", errors="replace")


def fetch_metrics(
    node: str,
    ip: str,
    *,
    port: int = ADMIN_PORT,
    timeout: float = 2.0,
    connect: Connect | None = None,
) -> str:
    """The Prometheus text a pod's proxy serves at ``ip:port/metrics``, dialled from ``node``."""
    connect = connect or netns.connect
    try:
        sock = connect(names.node_netns(node), ip, port, timeout)
    except OSError as exc:
        raise FetchError(f"connect to {ip}:{port} from node {node}: {_describe(exc)}") from exc
    return http_get(sock, f"{ip}:{port}", METRICS_PATH, timeout)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return str(exc) or type(exc).__name__
