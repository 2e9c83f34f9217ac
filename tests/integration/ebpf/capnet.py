"""meshnet's two pods with eBPF capture instead of iptables: the ``sidecar+ebpf`` harness.

Each "pod" gets a cgroup v2 directory shaped like the lab's (``<pod>/app`` and ``<pod>/proxy``
leaves); processes named ``proxy-*`` start in the proxy leaf, everything else in the app leaf.
The capture datapath (agent/dp_capture.py) programs both pods from a NodeState, as the agent
would. Imported by name; bench_proxy.py uses it for ``--capture ebpf``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "proxy"))

from meshnet import CLIENT_IP, CLIENT_NS, SERVER_IPS, SERVER_NS, MeshNet

from hybridmesh.agent.datapath import NodeState, PodView
from hybridmesh.agent.dp_capture import CaptureDatapath
from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf.build import build
from hybridmesh.lab import _sh

NODE = f"capnet{os.getpid()}"
PODS = {CLIENT_NS: ("client-0", CLIENT_IP), SERVER_NS: ("web-0", SERVER_IPS[0])}

GET = """
import json, socket, sys
ip, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((ip, port), timeout=5)
s.sendall(f"GET {path} HTTP/1.1\\r\\nHost: {ip}\\r\\nConnection: close\\r\\n\\r\\n".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
head, _, body = data.partition(b"\\r\\n\\r\\n")
lines = head.decode("latin-1").split("\\r\\n")
fields = {k.lower(): v for k, _, v in (l.partition(": ") for l in lines[1:])}
print(json.dumps({"status": int(lines[0].split()[1]), "headers": fields,
                  "body": body.decode(errors="replace")}))
"""
RECV = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(s.recv(100).decode().strip())
"""


def cgroup2_root() -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2":
            return Path(fields[4])
    raise RuntimeError("no cgroup2 mount: eBPF capture needs cgroup v2")


@dataclass
class CapNet(MeshNet):
    """MeshNet whose pods are captured by eBPF: no iptables rule anywhere."""

    root: Path | None = None
    dp: CaptureDatapath | None = None

    def up(self) -> None:
        build()
        super().up()
        self.root = cgroup2_root() / f"hm-capnet-{os.getpid()}"
        for pod in ("client", "server"):
            for leaf in ("app", "proxy"):
                (self.root / pod / leaf).mkdir(parents=True, exist_ok=True)
        self.dp = CaptureDatapath(NODE)

    def pod_cgroup(self, netns: str) -> Path:
        assert self.root is not None
        return self.root / ("client" if netns == CLIENT_NS else "server")

    def in_pod(self, netns: str, argv: Sequence[str], leaf: str = "app") -> list[str]:
        """``argv`` run in the pod's netns and its ``leaf`` cgroup (joined before exec)."""
        procs = self.pod_cgroup(netns) / leaf / "cgroup.procs"
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), *_sh.in_netns(netns, argv)]

    def spawn(self, name: str, netns: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        leaf = "proxy" if name.startswith("proxy") else "app"
        joined = self.in_pod(netns, argv, leaf)
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(joined, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def state(self, version: int = 1) -> NodeState:
        pods = tuple(
            PodView(namespace="default", name=name, ip=ip, node=NODE, service_account="default",
                    placement="sidecar+ebpf", ready=True, cgroup=self.pod_cgroup(ns),
                    netns=_sh.NETNS_DIR / ns)
            for ns, (name, ip) in PODS.items()
        )
        return NodeState(node=NODE, version=version, pods=pods, services=(), policies=())

    def program(self) -> None:
        """What the agent does once the proxies listen: every pod programmed, none pending."""
        assert self.dp is not None
        self.dp.sync(self.state())  # raises ListenerPending if a proxy does not listen

    def capture(self, on: bool) -> None:
        raise RuntimeError("CapNet captures with eBPF: use program()")

    def down(self) -> None:
        try:
            self.stop_all()
            if self.dp is not None:
                self.dp.remove()
        finally:
            super().down()
            if self.root is not None:
                for d in sorted((p for p in self.root.rglob("*") if p.is_dir()), reverse=True):
                    _rmdir(d)
                _rmdir(self.root)
            bpffs.remove_pin_dir(bpffs.pin_dir(f"hm-{NODE}-capture"))

    # -- the client app ---------------------------------------------------------------------
    def app(self, netns: str, script: str, *args: str) -> str:
        """Run a python ``script`` as an app of the pod in ``netns`` (its cgroup: captured)."""
        argv = self.in_pod(netns, [sys.executable, "-c", script, *args])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if out.returncode != 0:
            raise AssertionError(f"app in {netns} failed: {out.stderr.strip()}")
        return out.stdout

    def get(self, ip: str, port: int, path: str = "/", netns: str = CLIENT_NS) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.app(netns, GET, ip, str(port), path))
        return result

    def banner(self, ip: str, port: int) -> str:
        return self.app(CLIENT_NS, RECV, ip, str(port)).strip()


def _rmdir(path: Path) -> None:
    """rmdir fails with EBUSY while an exiting process still counts; give it a moment."""
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
