"""Two lab-like nodes in network namespaces, a node proxy process in each, a fake CA.

    hm-npn1-<pid>                                   hm-npn2-<pid>
      fabric 172.31.250.1/24  ───── veth ─────      fabric 172.31.250.2/24
      pods (on lo): client-0 10.244.1.5              web-0 10.244.2.7 (echo :8080)
                    other-0  10.244.1.6
      gateway 10.244.1.1 (outbound :15001)          routes 10.244.1.0/24 via the fabric
      node proxy n1                                 node proxy n2

The fake control plane (a thread of the test process, the CA: ``FakeNodeControl``) serves both
node snapshots and signs node requests. Sources are resolved through the real pinned
``hm_node_src`` map, which the client helper (run in n1) fills before connecting, exactly as the
steering program's sockops will: the node proxies run the production ``BpfSourceResolver``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent / "proxy"))  # the shared process tracker
from netprocs import NetProcesses

from hybridmesh.agent.nodeproxy._libbpf_nodesrc import create_source_map
from hybridmesh.agent.nodeproxy.testing import FakeNodeControl, node_pod, node_snapshot
from hybridmesh.ebpf import bpffs
from hybridmesh.lab import _sh
from hybridmesh.lab.names import pod_cgroup
from hybridmesh.proxy.testing import endpoint, service

_RUN = os.getpid() % 100000
N1, N2 = f"hm-npn1-{_RUN}", f"hm-npn2-{_RUN}"
LINK1, LINK2 = f"hm-npa{_RUN}", f"hm-npb{_RUN}"
FABRIC = {"n1": "172.31.250.1", "n2": "172.31.250.2"}
GATEWAY = "10.244.1.1"
CLIENT_IP, OTHER_IP, WEB_IP = "10.244.1.5", "10.244.1.6", "10.244.2.7"
VIP, WEB_PORT = "10.96.0.10", 8080
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"

ECHO_APP = """
import asyncio, sys
async def echo(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except ConnectionError:
        pass
    w.close()
async def main():
    server = await asyncio.start_server(echo, sys.argv[1], int(sys.argv[2]), backlog=4096)
    await server.serve_forever()
asyncio.run(main())
"""


@dataclass
class NodeNet(NetProcesses):
    cp: FakeNodeControl | None = None
    pin: Path = field(default_factory=lambda: bpffs.pin_dir(f"hm-npt{_RUN}") / "hm_node_src")
    proxy_args: dict[str, list[str]] = field(default_factory=dict)

    # -- network ------------------------------------------------------------------------------
    def up(self, policies: list[dict[str, Any]] | None = None) -> None:
        for ns in (N1, N2):
            if _sh.netns_exists(ns):
                _sh.ip(None, "netns", "del", ns)
            _sh.ip(None, "netns", "add", ns)
        _sh.ip(N1, "link", "add", LINK1, "type", "veth", "peer", "name", LINK2, "netns", N2)
        _sh.ip_batch(N1, ["link set lo up", f"addr add {FABRIC['n1']}/24 dev {LINK1}",
                          f"link set {LINK1} up", f"addr add {GATEWAY}/32 dev lo",
                          f"addr add {CLIENT_IP}/32 dev lo", f"addr add {OTHER_IP}/32 dev lo",
                          f"route add 10.244.2.0/24 via {FABRIC['n2']}"])
        _sh.ip_batch(N2, ["link set lo up", f"addr add {FABRIC['n2']}/24 dev {LINK2}",
                          f"link set {LINK2} up", f"addr add {WEB_IP}/32 dev lo",
                          f"route add 10.244.1.0/24 via {FABRIC['n1']}"])
        for pod in ("client-0", "other-0", "web-0"):
            (self.tmp / "cg" / pod_cgroup("default", pod)).mkdir(parents=True, exist_ok=True)
        bpffs.ensure_mounted()
        os.close(create_source_map(self.pin))
        self.cp = FakeNodeControl(self.tmp / "cp.sock")
        self.cp.start_in_thread()
        self.publish(policies or [])
        self.python("web", N2, "-c", ECHO_APP, WEB_IP, str(WEB_PORT))
        for node in ("n1", "n2"):
            (self.tmp / f"{node}.token").write_text(self.cp.issue_node_token(node))
            self.start_proxy(node)
        for node in ("n1", "n2"):
            self.wait_ready(node)

    def publish(self, policies: list[dict[str, Any]]) -> None:
        assert self.cp is not None
        pods = [node_pod("client-0", CLIENT_IP, node="n1"),
                node_pod("other-0", OTHER_IP, node="n1"), node_pod("web-0", WEB_IP, node="n2")]
        web = [endpoint("web-0", WEB_IP, placement="node", service_account="web", node="n2")]
        services = [service("web", VIP, [(80, WEB_PORT)], web)]
        for node in ("n1", "n2"):
            self.cp.set(node, node_snapshot(node, pods, services, policies=policies,
                                            nodes=FABRIC))

    def cgroup_id(self, pod: str) -> int:
        return os.stat(self.tmp / "cg" / pod_cgroup("default", pod)).st_ino

    # -- node proxies -------------------------------------------------------------------------
    def proxy_argv(self, node: str, *extra: str) -> list[str]:
        return ["-m", "hybridmesh.agent.nodeproxy", "--node", node,
                "--control", str(self.tmp / "cp.sock"), "--token-file",
                str(self.tmp / f"{node}.token"), "--source-map", str(self.pin),
                "--cgroup-base", str(self.tmp / "cg"), "--handoff",
                str(self.tmp / f"{node}.handoff"), "--drain-timeout", "60",
                *self.proxy_args.get(node, []), *extra]

    def start_proxy(self, node: str, name: str | None = None, *extra: str) -> None:
        netns = N1 if node == "n1" else N2
        self.python(name or f"proxy-{node}", netns, *self.proxy_argv(node, *extra))

    def admin(self, node: str, path: str) -> str:
        netns = N1 if node == "n1" else N2
        return _sh.run(_sh.in_netns(netns, ["curl", "-s", "--max-time", "3",
                                            f"http://127.0.0.1:15020{path}"]), check=False)

    def wait_ready(self, node: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            last = self.admin(node, "/ready")
            with contextlib.suppress(ValueError):
                doc = json.loads(last)
                if doc.get("ready"):
                    return dict(doc)
            time.sleep(0.1)
        logs = {n: self.log(n)[-2000:] for n in self.procs}
        raise AssertionError(f"node proxy {node} not ready: {last!r}; logs: {logs}")

    def metrics(self, node: str) -> str:
        return self.admin(node, "/metrics")

    # -- clients ------------------------------------------------------------------------------
    def client(self, *args: str, timeout: float = 60.0, netns: str = N1) -> dict[str, Any]:
        """Run the client helper in n1 and return its JSON report."""
        helper = Path(__file__).with_name("npclient.py")
        out = _sh.run(_sh.in_netns(netns, [sys.executable, str(helper), "--pin", str(self.pin),
                                           *args]), check=False)
        try:
            return dict(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            raise AssertionError(f"client helper said {out!r}") from None

    def client_args(self, pod: str, src: str, count: int = 1, **opts: Any) -> list[str]:
        args = ["--cgroup", str(self.cgroup_id(pod)), "--src", src, "--proxy",
                f"{GATEWAY}:15001", "--dest", f"{VIP}:80", "--count", str(count)]
        for key, value in opts.items():
            flag = f"--{key.replace('_', '-')}"
            args += [flag] if value is True else [flag, str(value)]
        return args

    def down(self) -> None:
        self.stop_all()
        if self.cp is not None:
            self.cp.stop_thread()
        for ns in (N1, N2):
            if _sh.netns_exists(ns):
                _sh.ip(None, "netns", "del", ns, check=False)
        bpffs.remove_pin_dir(self.pin.parent)
