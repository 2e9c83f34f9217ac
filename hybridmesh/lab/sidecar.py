"""Sidecar injection in the lab: the proxy starts first, the app only once the proxy is ready.

This is Kubernetes' native-sidecar order (an init container with ``restartPolicy: Always``
and a startup probe), which removes the classic race where the app's first connections leave
before the proxy listens. Capture (iptables in the pod netns) is installed when the pod's
network is created, before either process runs.

``sidecar+ebpf`` pods get no iptables at all: the node agent's capture datapath
(agent/dp_capture.py, ebpf/capture.py) attaches to the pod's cgroup and netns and takes the
proxy's 15006 listener from the proxy process itself (``pidfd_getfd``), so nothing here hands
it anything; the app waits for the agent's "programmed" as well (lab.py ``_gate``). The proxy
must run in the pod's ``proxy`` cgroup leaf: that cgroup, uid 1337 and the mark each exclude it.

The proxy runs as uid 1337 (Istio's habit) when that uid can read the interpreter and the
package; otherwise as root. Either way its sockets carry SO_MARK 0x539, which capture
excludes, so the proxy never captures its own traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from hybridmesh import env as hm_env
from hybridmesh.control.model import PodInfo
from hybridmesh.lab import names, netns

__all__ = ["ADMIN_PORT", "PROXY_MARK", "PROXY_UID", "proxy_argv", "proxy_probe", "proxy_uid"]

PROXY_UID = 1337
PROXY_MARK = 0x539  # SO_MARK on the proxy's own sockets; capture lets them through
ADMIN_PORT = 15020


@functools.cache
def proxy_uid() -> int | None:
    """1337 if that uid can start our interpreter and import the package, else None (root)."""
    try:
        probe = subprocess.run(
            [
                "setpriv",
                f"--reuid={PROXY_UID}",
                f"--regid={PROXY_UID}",
                "--clear-groups",
                sys.executable,
                "-c",
                "import hybridmesh.proxy",
            ],
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return PROXY_UID if probe.returncode == 0 else None


def proxy_argv(pod: PodInfo, *, token_file: Path | None = None) -> list[str]:
    """The proxy's command line; ``token_file`` (the pod's bootstrap token, tokens.py) turns
    on its workload identity and mTLS. Only the path is on the command line, never the token."""
    argv = [
        sys.executable,
        "-OO",  # no docstrings/asserts in memory: ~1.7 MB RSS per worker (./run precompiles)
        "-m",
        "hybridmesh.proxy",
        "--pod",
        pod.key,
        "--control",
        str(hm_env.control_socket()),
    ]
    if token_file is not None:
        argv += ["--token-file", str(token_file)]
    return argv


def proxy_probe(pod: PodInfo) -> Callable[[], Awaitable[bool]]:
    """Kubernetes httpGet probe on the proxy's admin port, from the pod's node netns."""
    node_ns = names.node_netns(pod.node)

    async def probe() -> bool:
        try:
            reader, writer = await netns.open_connection(node_ns, pod.ip, ADMIN_PORT, 1.0)
        except OSError:
            return False
        try:
            writer.write(b"GET /ready HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
            line = await asyncio.wait_for(reader.readline(), 1.0)
            return line.split(b" ")[1:2] == [b"200"]
        except (OSError, TimeoutError, IndexError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return probe
