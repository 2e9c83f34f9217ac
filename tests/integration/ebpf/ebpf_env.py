"""What the eBPF integration tests share: the netns layout and a client runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEER = Path(__file__).with_name("sockpeer.py")
TAG = f"hm-test-{os.getpid()}"
BACKENDS = ("10.200.0.1", "10.200.0.2")
VIP = "10.96.0.10"  # a local address in the netns: a connect that is not balanced reaches it
PORT = 8080  # where the peer serves, on every address of the netns


@dataclass
class Netns:
    name: str

    def run(self, argv: list[str], cgroup: Path | None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in this netns, inside ``cgroup`` when given (joined before entering)."""
        cmd = ["ip", "netns", "exec", self.name, *argv]
        if cgroup is not None:
            cmd = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)

    def connect(
        self, cgroup: Path | None, vip: str, port: int, count: int = 1, proto: str = "tcp"
    ) -> list[dict[str, Any]]:
        """``count`` connects to vip:port from a client in ``cgroup``; what each one saw."""
        argv = [sys.executable, str(PEER), "connect", proto, vip, str(port), str(count)]
        result: list[dict[str, Any]] = json.loads(self.run(argv, cgroup).stdout)
        return result
