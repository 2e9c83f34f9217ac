"""A small real lab for the lab layer's privileged tests (helpers; fixtures in conftest.py).

Imported by name: pytest puts this directory on sys.path (the tests are not a package).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hybridmesh.control.model import Endpoint, Limits, NodeInfo, PodInfo
from hybridmesh.lab import netns, network, procs
from hybridmesh.lab.cgroups import CgroupLayout, PodCgroup
from hybridmesh.lab.names import node_netns, pod_netns

# Answers every connection with "<pod name> <peer address>" and closes it.
ECHO_SERVER = """
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(128)
while True:
    c, peer = s.accept()
    c.sendall(f"{name} {peer[0]}\\n".encode())
    c.close()
"""

ECHO_PORT = 8080


def make_nodes(count: int) -> list[NodeInfo]:
    return [NodeInfo(f"n{i}", i, f"10.244.{i}.0/24", f"10.244.{i}.1", f"172.31.255.{i}")
            for i in range(1, count + 1)]


def make_pod(name: str, node: NodeInfo, host: int, limits: Limits | None = None) -> PodInfo:
    ip = node.gateway.rsplit(".", 1)[0] + f".{host}"
    return PodInfo(name, "shop", name.rsplit("-", 1)[0], int(name.rsplit("-", 1)[1]), node.name,
                   ip, "sa", "none", limits=limits or Limits())


def endpoint(pod: PodInfo) -> Endpoint:
    return Endpoint(pod.name, pod.namespace, pod.ip, pod.node, pod.service_account, "none")


@dataclass
class MiniLab:
    """Realized nodes and pods, and the processes the test started in them."""

    layout: CgroupLayout
    log_dir: Path
    nodes: list[NodeInfo]
    pods: dict[str, PodInfo] = field(default_factory=dict)
    cgroups: dict[str, PodCgroup] = field(default_factory=dict)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def node(self, name: str) -> NodeInfo:
        return next(n for n in self.nodes if n.name == name)

    def add_pod(self, pod: PodInfo) -> PodInfo:
        network.create_pod(pod, self.node(pod.node))
        cg = PodCgroup(pod.namespace, pod.name, self.layout)
        cg.create(pod.limits)
        self.pods[pod.name], self.cgroups[pod.name] = pod, cg
        return pod

    def netns(self, pod: str) -> str:
        return pod_netns("shop", pod)

    def spawn(self, pod: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        proc = procs.spawn_in_pod(self.netns(pod), self.cgroups[pod].procs_files("app"),
                                  argv, None, self.log_dir / f"{pod}.log")
        self.started.append(proc)
        return proc

    def start_echo(self, pod: str) -> None:
        self.spawn(pod, [sys.executable, "-c", ECHO_SERVER, pod, str(ECHO_PORT)])
        self.wait_listening(pod, ECHO_PORT)

    def wait_listening(self, pod: str, port: int, timeout: float = 5.0) -> None:
        info = self.pods[pod]
        deadline = time.monotonic() + timeout
        while True:
            try:
                netns.connect(node_netns(info.node), info.ip, port, timeout=1.0).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def echo_from(netns_name: str, ip: str, port: int = ECHO_PORT) -> tuple[str, str]:
    """(pod name, peer address the server saw) for one connection made from ``netns_name``."""
    with netns.connect(netns_name, ip, port, timeout=2.0) as sock:
        sock.settimeout(2.0)
        name, peer = sock.makefile().readline().split()
    return name, peer


