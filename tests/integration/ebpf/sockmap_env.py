"""Two "pods" on one bridge for the sockmap tests, and sockets made inside them.

A socket belongs to the netns and the cgroup of the task that *created* it (sockops runs on the
cgroup the socket was born in; an accepted socket inherits its listener's). So a forked child
joins the pod's cgroup, enters its netns, creates the socket and passes the fd back over a unix
socket: the test then drives both ends of a connection from its own threads, with no helper
process to script.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

Socket = socket.socket  # Pod.socket() shadows the module inside the class body
CLONE_NEWNET = 0x40000000
PORT = 7000
SUBNET = "10.201.0"


@dataclass(frozen=True)
class Pod:
    name: str  # netns name
    ip: str
    cgroup: Path

    @property
    def netns(self) -> Path:
        return Path("/run/netns") / self.name

    def socket(self) -> socket.socket:
        """A TCP socket created in this pod (its netns and cgroup)."""
        return socket_in(self.netns, self.cgroup)

    def listen(self, ip: str | None = None, port: int = PORT) -> Socket:
        server = self.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((ip or self.ip, port))
        server.listen(16)
        return server

    def connect(
        self, ip: str, port: int = PORT, bind: tuple[str, int] | None = None
    ) -> Socket:
        client = self.socket()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if bind is not None:
            client.bind(bind)
        client.settimeout(10)
        client.connect((ip, port))
        return client

    def iptables(self, *args: str) -> None:
        _sh("ip", "netns", "exec", self.name, "iptables", "-w", *args)


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def socket_in(netns: Path, cgroup: Path) -> socket.socket:
    """Fork a child that joins ``cgroup``, enters ``netns`` and sends back a new TCP socket."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the child: no exceptions past here, only an exit status
        status = 1
        try:
            parent.close()
            (cgroup / "cgroup.procs").write_text(f"{os.getpid()}\n")
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            with open(netns, "rb") as ns:
                if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    os._exit(2)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socket.send_fds(child, [b"s"], [sock.fileno()])
            status = 0
        finally:
            os._exit(status)
    child.close()
    try:
        _, fds, _, _ = socket.recv_fds(parent, 1, 1)
    finally:
        parent.close()
        _, status = os.waitpid(pid, 0)
    if status != 0 or not fds:
        raise RuntimeError(f"could not make a socket in {netns} / {cgroup} (status {status})")
    return socket.socket(fileno=fds[0])


@contextmanager
def bridged_pods(tag: str, cgroup_root: Path, count: int = 2) -> Iterator[list[Pod]]:
    """``count`` pods, each a netns with a veth on one bridge (in a node netns) and a cgroup."""
    node = f"{tag}-node"
    pods = [
        Pod(f"{tag}-p{i}", f"{SUBNET}.{i + 1}", cgroup_root / f"{tag}-p{i}") for i in range(count)
    ]
    made: list[str] = []
    try:
        _sh("ip", "netns", "add", node)
        made.append(node)
        _sh("ip", "-n", node, "link", "add", "hm-br0", "type", "bridge")
        _sh("ip", "-n", node, "link", "set", "hm-br0", "up")
        for i, pod in enumerate(pods):
            _sh("ip", "netns", "add", pod.name)
            made.append(pod.name)
            pod.cgroup.mkdir()
            _plug(node, pod, f"hm-v{i}")
        yield pods
    finally:
        for pod in pods:
            _rmdir(pod.cgroup)
        for name in reversed(made):
            if Path("/run/netns", name).exists():
                subprocess.run(["ip", "netns", "del", name], check=False)


def _plug(node: str, pod: Pod, host_end: str) -> None:
    _sh("ip", "-n", pod.name, "link", "set", "lo", "up")
    _sh("ip", "-n", pod.name, "link", "add", "eth0", "type", "veth", "peer", "name", host_end,
        "netns", node)  # fmt: skip
    _sh("ip", "-n", node, "link", "set", host_end, "master", "hm-br0", "up")
    _sh("ip", "-n", pod.name, "addr", "add", f"{pod.ip}/24", "dev", "eth0")
    _sh("ip", "-n", pod.name, "link", "set", "eth0", "up")


def _rmdir(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
