"""Sidecar workers and a node proxy on loopback, one CA: the unprivileged HBONE bed.

    client-0 sidecar (127.0.0.1) ──HBONE──► node proxy n2 (127.0.0.2) ──► web-0 app (127.0.0.3)
    caller (test, client SVID) ──HBONE──► api-0 sidecar (127.0.0.5) ──► api-0 app (127.0.0.5)
    caller ──HBONE CONNECT VIP──► waypoint-web-0 (127.0.0.4) ──HBONE──► n2 ──► web-0

``web-0`` is a ``node`` pod of n2 (no sidecar: its node proxy answers for it). The sidecars'
snapshots carry the node's tunnel address (``nodes[].fabricIP`` + ``tunnelPort``, free port).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mtls_harness import free_port
from proxy_harness import Backend, Handler, ok, read_response

from hybridmesh.agent.nodeproxy.context import NodeConfig
from hybridmesh.agent.nodeproxy.server import NodeProxy
from hybridmesh.agent.nodeproxy.source import CgroupIndex, TableSourceResolver
from hybridmesh.agent.nodeproxy.testing import FakeNodeControl, node_pod, node_snapshot
from hybridmesh.agent.nodeproxy.tunnels import dial
from hybridmesh.agent.nodeproxy.view import LocalPod
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.proxy.config import ProxyConfig
from hybridmesh.proxy.hbone import bridged_pair
from hybridmesh.proxy.hbone_listen import HboneListener
from hybridmesh.proxy.hbone_waypoint import WAYPOINT_LABEL
from hybridmesh.proxy.testing import FakeControlPlane, endpoint, pod_snapshot, service
from hybridmesh.proxy.worker import Worker

VIP = "10.96.0.10"
CLIENT_IP, N2_IP, WEB_IP, WAYPOINT_IP, API_IP, FRONT_IP = (
    "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
WAYPOINT_VIP, PLAIN_VIP = "10.96.0.12", "10.96.0.13"  # plain: web-0 again, L4 only
TD = "cluster.local"
CLIENT_ID, WEB_ID, WAYPOINT_ID, API_ID, FRONT_ID = (
    f"spiffe://{TD}/ns/default/sa/{sa}" for sa in ("client", "web", "waypoint", "api", "front"))


def deny(name: str, *, principals: Iterable[str] = (), paths: Iterable[str] = (),
         app: str = "web") -> dict[str, Any]:
    """A DENY policy on ``app`` (snapshot JSON shape)."""
    rule: dict[str, Any] = {}
    if principals:
        rule["from"] = [{"source": {"principals": list(principals)}}]
    if paths:
        rule["to"] = [{"operation": {"paths": list(paths)}}]
    return {"apiVersion": "hybridmesh.io/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": app}}, "action": "DENY",
                     "rules": [rule]}}


@dataclass
class Bed:
    tmp: Path
    ncp: FakeNodeControl
    cp: FakeControlPlane
    web: Backend
    api: Backend
    tunnel_port: int = 0
    node: NodeProxy | None = None
    workers: dict[str, Worker] = field(default_factory=dict)
    policies: list[dict[str, Any]] = field(default_factory=list)
    node_policies: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    web_protocol: str | None = None
    waypoint: bool = False  # the web Service has a waypoint (waypoint-web-0 serves it)
    node_placement: str = "node"  # web-0's placement as sidecars see it ("none": plaintext)
    h2_port: int | None = None  # web's port goes to this h2c (gRPC) app on web-0's address
    resolver: TableSourceResolver | None = None

    # -- snapshots --------------------------------------------------------------------------
    def services(self) -> list[dict[str, Any]]:
        port = (80, self.web.port, self.web_protocol) if self.web_protocol else \
            (80, self.web.port)
        if self.h2_port is not None:
            port = (80, self.h2_port, "grpc")
        web = [endpoint("web-0", WEB_IP, placement=self.node_placement, service_account="web",
                        node="n2")]
        api = [endpoint("api-0", API_IP, service_account="api", node="n1")]
        svcs = [service("web", VIP, [port], web),
                service("api", "10.96.0.11", [(80, self.api.port)], api),
                service("plain", PLAIN_VIP, [port], web, selector={"app": "web"})]
        if self.waypoint and "waypoint-web-0" in self.workers:
            wp = [endpoint("waypoint-web-0", WAYPOINT_IP, service_account="waypoint")]
            svcs.append(service("waypoint-web", WAYPOINT_VIP,
                                [(15008, self.hbone_port("waypoint-web-0"), "tcp")], wp,
                                selector={WAYPOINT_LABEL: "web"}))
        return svcs

    def publish(self) -> None:
        svcs = self.services()
        pods = [node_pod("web-0", WEB_IP, node="n2", service_account="web"),
                node_pod("front-0", FRONT_IP, node="n2", service_account="front")]
        self.ncp.set("n2", node_snapshot("n2", pods, svcs, policies=self.node_policies,
                                         nodes={"n2": N2_IP}))
        nodes = [{"name": "n2", "fabricIP": N2_IP, "tunnelPort": self.tunnel_port}]
        for pod, ip, sa, labels in (
            ("client-0", CLIENT_IP, "client", None),
            ("api-0", API_IP, "api", None),
            ("waypoint-web-0", WAYPOINT_IP, "waypoint", {WAYPOINT_LABEL: "web"}),
        ):
            snap = pod_snapshot(pod, ip, svcs, service_account=sa, labels=labels,
                                mtls_mode="STRICT", policies=self.policies, routes=self.routes)
            snap["nodes"] = nodes
            self.cp.set(f"default/{pod}", snap)

    # -- talking --------------------------------------------------------------------------------
    async def request(self, raw: bytes, port: int | None = None) -> bytes:
        port = port or self.workers["client-0"].outbound_port
        reader, writer = await asyncio.open_connection(CLIENT_IP, port)
        try:
            writer.write(raw)
            async with asyncio.timeout(5):
                return await read_response(reader)
        finally:
            writer.close()

    def hbone_port(self, pod: str) -> int:
        server = next(s for s in self.workers[pod]._servers if isinstance(s, HboneListener))
        return server.port

    async def stream(self, ip: str, pod: str, authority: tuple[str, int], *,
                     expected: str, caller: str = "client-0"
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
        """A CONNECT stream to ``pod``'s HBONE port as ``caller``'s identity: the connection,
        or the refusal reason."""
        mesh = self.workers[caller].ctx.mtls
        assert mesh is not None and mesh.identity.material is not None
        conn = await dial((ip, self.hbone_port(pod)), mesh.identity.material,
                          frozenset({SpiffeId.parse(expected)}), "x.svid.hm")
        near, held = await bridged_pair()
        opened: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        def on_opened(sid: int, reason: str | None) -> None:
            if reason is None:
                held.join(conn, sid)
            opened.set_result(reason)

        conn.open(authority, "default/test", on_opened)
        async with asyncio.timeout(5):
            reason = await opened
        if reason is not None:
            near.close()
            return reason
        return await asyncio.open_connection(sock=near)

    def metric(self, text: str, name: str, **labels: str) -> float:
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{"):
                key, _, value = line.rpartition(" ")
                if all(f'{k}="{v}"' in key for k, v in labels.items()):
                    total += float(value)
        return total

    async def steered(self, dest: tuple[str, int] = (VIP, 80)
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection from the node pod front-0, steered to n2's outbound listener as the
        eBPF program would (the resolver is the map's test double)."""
        assert self.node is not None and self.resolver is not None
        sock = socket.socket()
        sock.bind((FRONT_IP, 0))
        name = self.node._sockets["outbound"].getsockname()
        local = (str(name[0]), int(name[1]))
        cg = self.tmp / "cg" / "default.front-0"
        cg.mkdir(parents=True, exist_ok=True)
        self.resolver.record((FRONT_IP, int(sock.getsockname()[1])), local,
                             os.stat(cg).st_ino, dest)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, local)
        return await asyncio.open_connection(sock=sock)

    def node_metrics(self) -> str:
        assert self.node is not None
        return self.node.ctx.metrics.exposition().decode()


def _config(tmp: Path, pod: str, ip: str, **kw: Any) -> ProxyConfig:
    base = ProxyConfig(namespace="default", pod=pod, control_socket=str(tmp / "cp.sock"),
                       outbound_port=0, inbound_port=0, admin_port=0, mark=None,
                       drain_grace_s=0.5, connect_timeout_s=2.0, bind_host=ip,
                       token_file=str(tmp / f"{pod}.token"))
    return replace(base, **kw)


async def _node_proxy(bed: Bed) -> NodeProxy:
    token = bed.tmp / "n2.token"
    token.write_text(bed.ncp.issue_node_token("n2"))
    index = CgroupIndex()

    def cgroup(pod: LocalPod) -> Path:
        path = bed.tmp / "cg" / pod.key.replace("/", ".")
        path.mkdir(parents=True, exist_ok=True)
        return path

    config = NodeConfig("n2", bed.ncp.path, str(token), outbound=(N2_IP, 0),
                        tunnel=(N2_IP, bed.tunnel_port), admin=(N2_IP, 0), mark=None)
    bed.resolver = TableSourceResolver(index)
    proxy = NodeProxy(config, bed.resolver, index, cgroup)
    await proxy.start()
    async with asyncio.timeout(10):
        while not (proxy.ctx.view and all(proxy.ctx.identities.material(p.key)
                                          for p in proxy.ctx.view.served())):
            await asyncio.sleep(0.02)
    return proxy


async def _wait_waypoint(proxy: NodeProxy) -> None:
    async with asyncio.timeout(10):
        while not (proxy.ctx.view and any(k[1] == 15008 for k in proxy.ctx.view.vips)):
            await asyncio.sleep(0.02)


async def _worker(bed: Bed, pod: str, ip: str, original: Mapping[str, tuple[str, int]]) -> Worker:
    (bed.tmp / f"{pod}.token").write_text(bed.cp.issue_token(f"default/{pod}"))
    worker = Worker(_config(bed.tmp, pod, ip),
                    original_dst=lambda _s, d: original.get(d))
    await worker.start()
    await worker.wait_ready(5)
    async with asyncio.timeout(10):
        while worker.ctx.mtls is None or worker.ctx.mtls.identity.material is None:
            await asyncio.sleep(0.01)
    return worker


@contextlib.asynccontextmanager
async def hbone_bed(tmp: Path, *, web: Handler = ok, **options: Any) -> AsyncIterator[Bed]:
    """The node proxy, the web app behind it, and the three sidecar workers, all up."""
    ncp = FakeNodeControl(tmp / "ncp.sock")
    cp = FakeControlPlane(tmp / "cp.sock")
    cp.ca = ncp.ca  # one mesh CA: every SVID chains to the same bundle
    web_app, api_app = Backend(WEB_IP, web), Backend(API_IP, ok)
    await web_app.start()
    await api_app.start()
    bed = Bed(tmp, ncp, cp, web_app, api_app, tunnel_port=free_port(N2_IP), **options)
    await ncp.start()
    await cp.start()
    bed.publish()
    try:
        bed.node = await _node_proxy(bed)
        bed.workers["client-0"] = await _worker(bed, "client-0", CLIENT_IP,
                                                {"outbound": (VIP, 80)})
        bed.workers["api-0"] = await _worker(bed, "api-0", API_IP, {})
        bed.workers["waypoint-web-0"] = await _worker(bed, "waypoint-web-0", WAYPOINT_IP, {})
        if bed.waypoint:  # now that its HBONE port is known
            bed.publish()
            await _wait_waypoint(bed.node)
        yield bed
    finally:
        for worker in bed.workers.values():
            await worker.close()
        if bed.node is not None:
            await bed.node.close()
        await web_app.stop()
        await api_app.stop()
        await cp.close()
        await ncp.close()
