"""Two proxy workers on loopback talking mTLS, for unprivileged tests (imported by name).

    test client ──► client proxy (outbound, 127.0.0.1) ──mTLS──► server proxy (inbound
    127.0.0.2:P) ──► app (127.0.0.3:A)

No iptables: each worker's ``original_dst`` hook says where the client "dialled" (the web
VIP on the client side, the app's address on the server side). The fake control plane is
the CA; each proxy gets its pod's bootstrap token in a file, as the lab does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from proxy_harness import Backend, Handler, ok, read_response

from hybridmesh.proxy.config import ProxyConfig
from hybridmesh.proxy.testing import FakeControlPlane, endpoint, pod_snapshot, service
from hybridmesh.proxy.worker import Worker

VIP = "10.96.0.10"
CLIENT_IP, SERVER_IP, APP_IP = "127.0.0.1", "127.0.0.2", "127.0.0.3"
CLIENT_POD, SERVER_POD = "default/client-0", "default/web-0"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/default/sa/web"


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


@dataclass
class Pair:
    cp: FakeControlPlane
    client: Worker
    server: Worker
    app: Backend
    inbound_port: int
    tmp: Path

    def services(self, *, web_sa: str = "web", app_protocol: str | None = None,
                 placement: str = "sidecar") -> list[dict[str, Any]]:
        ports = [(80, self.inbound_port, app_protocol)] if app_protocol else \
            [(80, self.inbound_port)]
        return [
            service("web", VIP, ports, [endpoint("web-0", SERVER_IP, service_account=web_sa,
                                                 placement=placement)]),
            service("client", "10.96.0.20", [(80, 80)],
                    [endpoint("client-0", CLIENT_IP, service_account="client")]),
        ]

    def publish(self, *, mode: str = "STRICT", policies: list[dict[str, Any]] | None = None,
                **kw: Any) -> None:
        svcs = self.services(**kw)
        self.cp.set(CLIENT_POD, pod_snapshot("client-0", CLIENT_IP, svcs, mtls_mode=mode,
                                             service_account="client"))
        self.cp.set(SERVER_POD, pod_snapshot("web-0", APP_IP, svcs, mtls_mode=mode,
                                             service_account="web", policies=policies or ()))

    async def request(self, raw: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(CLIENT_IP, self.client.outbound_port)
        try:
            writer.write(raw)
            async with asyncio.timeout(5):
                return await read_response(reader)
        finally:
            writer.close()

    async def get(self, path: str = "/", extra: str = "") -> bytes:
        return await self.request(f"GET {path} HTTP/1.1\r\nHost: web\r\n{extra}\r\n".encode())

    def metric(self, worker: Worker, name: str, **labels: str) -> float:
        total = 0.0
        for line in worker.exposition().decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                key, _, value = line.rpartition(" ")
                if all(f'{k}="{v}"' in key for k, v in labels.items()):
                    total += float(value)
        return total

    async def wait_identity(self, *workers: Worker, generation: int = 1) -> None:
        async with asyncio.timeout(10):
            for w in workers or (self.client, self.server):
                while True:
                    mesh = w.ctx.mtls
                    m = mesh.identity.material if mesh is not None else None
                    if m is not None and m.generation >= generation:
                        break
                    await asyncio.sleep(0.01)


def _config(tmp: Path, pod: str, token: Path, **kw: Any) -> ProxyConfig:
    base = ProxyConfig(namespace="default", pod=pod, control_socket=str(tmp / "cp.sock"),
                       outbound_port=0, inbound_port=0, admin_port=0, mark=None,
                       drain_grace_s=1.0, connect_timeout_s=1.0, token_file=str(token))
    return replace(base, **kw)


@contextlib.asynccontextmanager
async def mesh_pair(tmp: Path, *, mode: str = "STRICT", cert_ttl: timedelta = timedelta(hours=1),
                    handler: Handler = ok, wait: bool = True, ca_up: bool = True,
                    publish: Mapping[str, Any] | None = None) -> AsyncIterator[Pair]:
    """Both proxies up with SVIDs (unless ``wait=False``), the app behind the server proxy."""
    cp = FakeControlPlane(tmp / "cp.sock")
    await cp.start()
    cp.enable_identity(cert_ttl=cert_ttl)
    cp.ca_available = ca_up
    app = Backend(APP_IP, handler)
    await app.start()
    port = free_port(SERVER_IP)
    client = Worker(_config(tmp, "client-0", tmp / "client.token", bind_host=CLIENT_IP),
                    original_dst=lambda _s, d: (VIP, 80) if d == "outbound" else None)
    server = Worker(_config(tmp, "web-0", tmp / "web.token", bind_host=SERVER_IP,
                            inbound_port=port),
                    original_dst=lambda _s, d: (APP_IP, app.port) if d == "inbound" else None)
    pair = Pair(cp, client, server, app, port, tmp)
    pair.publish(mode=mode, **(publish or {}))
    (tmp / "client.token").write_text(cp.issue_token(CLIENT_POD))
    (tmp / "web.token").write_text(cp.issue_token(SERVER_POD))
    await client.start()
    await server.start()
    try:
        await client.wait_ready(5)
        await server.wait_ready(5)
        if wait:
            await pair.wait_identity()
        yield pair
    finally:
        await client.close()
        await server.close()
        await app.stop()
        await cp.close()
