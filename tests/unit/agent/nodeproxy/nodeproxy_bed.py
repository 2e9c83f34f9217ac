"""Two node proxies in one event loop on loopback addresses: the unprivileged tunnel bed.

    client-0 (n1, "pod IP" 127.0.0.4)  --steered-->  node proxy n1 (127.0.0.1)
        ==mTLS HTTP/2 CONNECT==>  node proxy n2 (127.0.0.2)  -->  web-0 echo (127.0.0.3)

The source is resolved through :class:`TableSourceResolver` (the test double of the eBPF map):
the client binds its source port, records the 4-tuple with its "cgroup" (a directory whose
inode is the cgroup id), then connects to n1's outbound listener, as sockops would have.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridmesh.agent.nodeproxy.context import NodeConfig
from hybridmesh.agent.nodeproxy.limits import Limits
from hybridmesh.agent.nodeproxy.server import NodeProxy
from hybridmesh.agent.nodeproxy.source import CgroupIndex, TableSourceResolver
from hybridmesh.agent.nodeproxy.testing import FakeNodeControl, node_pod, node_snapshot
from hybridmesh.agent.nodeproxy.view import LocalPod
from hybridmesh.proxy.testing import endpoint, service

N1_IP, N2_IP, WEB_IP, CLIENT_IP, OTHER_IP, LOCAL_IP = (
    "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
VIP, LOCAL_VIP = "10.96.0.10", "10.96.0.11"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"


def free_port(*ips: str) -> int:
    """A port free on every one of ``ips`` (the tunnel port is shared by all node proxies)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((ips[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for ip in ips[1:]:
                with socket.socket() as other:
                    other.bind((ip, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


async def echo_server(ip: str) -> tuple[asyncio.AbstractServer, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, ip, 0)
    return server, int(server.sockets[0].getsockname()[1])


def policy(name: str, action: str, principals: list[str], app: str = "web") -> dict[str, Any]:
    return {"apiVersion": "hybridmesh.io/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": app}}, "action": action,
                     "rules": [{"from": [{"source": {"principals": principals}}]}]}}


@dataclass
class Bed:
    tmp: Path
    limits: Limits = field(default_factory=Limits)
    cp: FakeNodeControl | None = None
    proxies: dict[str, NodeProxy] = field(default_factory=dict)
    resolvers: dict[str, TableSourceResolver] = field(default_factory=dict)
    web_port: int = 0
    local_port: int = 0
    tunnel_port: int = 0
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)

    def pods(self) -> list[dict[str, Any]]:
        return [node_pod("client-0", CLIENT_IP, node="n1"),
                node_pod("other-0", OTHER_IP, node="n1"),
                node_pod("web-0", WEB_IP, node="n2"),
                node_pod("local-0", LOCAL_IP, node="n1")]

    def services(self) -> list[dict[str, Any]]:
        web = [endpoint("web-0", WEB_IP, placement="node", service_account="web", node="n2")]
        local = [endpoint("local-0", LOCAL_IP, placement="node", service_account="local",
                          node="n1")]
        return [service("web", VIP, [(80, self.web_port)], web),
                service("local", LOCAL_VIP, [(80, self.local_port)], local)]

    def publish(self, policies: Iterable[Mapping[str, Any]] = ()) -> None:
        assert self.cp is not None
        nodes = {"n1": N1_IP, "n2": N2_IP}
        for node in nodes:
            self.cp.set(node, node_snapshot(node, self.pods(), self.services(),
                                            policies=policies, nodes=nodes))

    def cgroup(self, pod: LocalPod) -> Path:
        path = self.tmp / "cg" / pod.key.replace("/", ".")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cgroup_id(self, key: str) -> int:
        path = self.tmp / "cg" / key.replace("/", ".")
        path.mkdir(parents=True, exist_ok=True)
        return os.stat(path).st_ino

    async def up(self, policies: Iterable[Mapping[str, Any]] = ()) -> None:
        server, self.web_port = await echo_server(WEB_IP)
        local, self.local_port = await echo_server(LOCAL_IP)
        self._servers += [server, local]
        self.tunnel_port = free_port(N1_IP, N2_IP)
        self.cp = FakeNodeControl(self.tmp / "cp.sock")
        await self.cp.start()
        self.publish(policies)
        for node, ip in (("n1", N1_IP), ("n2", N2_IP)):
            token = self.tmp / f"{node}.token"
            token.write_text(self.cp.issue_node_token(node))
            index = CgroupIndex()
            resolver = self.resolvers[node] = TableSourceResolver(index)
            config = NodeConfig(node, self.cp.path, str(token), outbound=(ip, 0),
                                tunnel=(ip, self.tunnel_port), admin=(ip, 0), limits=self.limits,
                                mark=None)
            proxy = self.proxies[node] = NodeProxy(config, resolver, index, self.cgroup)
            await proxy.start()
        await self.wait_ready()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not all(p.ctx.view and all(p.ctx.identities.material(x.key)
                                             for x in p.ctx.view.served())
                          for p in self.proxies.values()):
                await asyncio.sleep(0.02)

    def outbound(self, node: str = "n1") -> tuple[str, int]:
        name = self.proxies[node]._sockets["outbound"].getsockname()
        return str(name[0]), int(name[1])

    async def connect(self, pod: str = "default/client-0", src_ip: str = CLIENT_IP,
                      dest: tuple[str, int] = (VIP, 80), *, record: bool = True,
                      node: str = "n1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A steered connection from ``pod`` (whose cgroup the kernel would see) bound to
        ``src_ip`` (which the pod may have forged)."""
        sock = socket.socket()
        sock.bind((src_ip, 0))
        local = self.outbound(node)
        if record:
            port = int(sock.getsockname()[1])
            self.resolvers[node].record((src_ip, port), local, self.cgroup_id(pod), dest)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, local)
        return await asyncio.open_connection(sock=sock)

    async def down(self) -> None:
        for proxy in self.proxies.values():
            await proxy.close()
        for server in self._servers:
            server.close()
        if self.cp is not None:
            await self.cp.close()


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    payload: bytes = b"ping", timeout: float = 5.0) -> bytes:
    """Send and read the echo back; b"" when the connection was refused/closed."""
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.readexactly(len(payload))
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""
