"""A node pod's connections to pods of other placements (docs/node.md §4), on loopback.

- to a ``sidecar`` pod: mTLS, ALPN ``hm-tcp``, the *source pod's* SVID as client certificate,
  the server verified as the endpoint's service account (an imposter gets nothing);
- to a ``kernel`` pod: plain TCP from a socket made by the source pod's socket factory (in the
  lab: the pod's own netns, so the kernel pod's L4 policy judges the pod's address).
"""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

from nodeproxy_bed import CLIENT_ID, Bed, echo_server, roundtrip

from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.tls import check_peer, server_context
from hybridmesh.identity.workload import Svid, make_csr, new_key
from hybridmesh.proxy.testing import endpoint, service

SIDE_IP, FAKE_IP, KERNEL_IP = "127.0.0.7", "127.0.0.8", "127.0.0.9"
SIDE_VIP, FAKE_VIP, KERNEL_VIP = "10.96.0.12", "10.96.0.13", "10.96.0.14"


class MixBed(Bed):
    """The loopback bed plus a sidecar pod, an imposter answering for it, and a kernel pod."""

    side_port = fake_port = kernel_port = 0
    seen: list[tuple[str, str | None, bytes]]
    made: list[tuple[str, str]]

    def services(self) -> list[dict[str, Any]]:
        def one(name: str, vip: str, ip: str, port: int, placement: str) -> dict[str, Any]:
            ep = endpoint(f"{name}-0", ip, placement=placement, service_account="side"
                          if name != "kernel" else "kernel", node="n2")
            return service(name, vip, [(80, port)], [ep])

        return [*super().services(), one("side", SIDE_VIP, SIDE_IP, self.side_port, "sidecar"),
                one("fake", FAKE_VIP, FAKE_IP, self.fake_port, "sidecar"),
                one("kernel", KERNEL_VIP, KERNEL_IP, self.kernel_port, "kernel")]

    async def tls_server(self, ip: str, account: str) -> int:
        assert self.cp is not None
        identity = SpiffeId.for_workload("cluster.local", "default", account)
        key = new_key()
        chain = self.cp.ca.sign(make_csr(key, identity), identity, timedelta(hours=1))
        ctx = server_context(Svid(chain, key, self.cp.ca.bundle))
        ctx.set_alpn_protocols(["hm-tcp"])

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tls = writer.get_extra_info("ssl_object")
            data = await reader.read(65536)
            self.seen.append((str(check_peer(tls, None)), tls.selected_alpn_protocol(), data))
            writer.write(data)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, ip, 0, ssl=ctx)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def up_mixed(self) -> None:
        self.seen, self.made = [], []
        await self.up()
        self.side_port = await self.tls_server(SIDE_IP, "side")
        self.fake_port = await self.tls_server(FAKE_IP, "imposter")
        kernel, self.kernel_port = await echo_server(KERNEL_IP)
        self._servers.append(kernel)
        proxy = self.proxies["n1"]

        def pod_socket(namespace: str, pod: str) -> socket.socket:
            self.made.append((namespace, pod))
            return socket.socket()

        proxy.ctx.source_socket = pod_socket
        self.publish()
        async with asyncio.timeout(10):
            while proxy.ctx.view is None or (KERNEL_VIP, 80) not in proxy.ctx.view.vips or \
                    proxy.ctx.view.vips[(KERNEL_VIP, 80)][1] != self.kernel_port:
                await asyncio.sleep(0.02)


def run(tmp_path: Path, check: Any) -> None:
    async def body() -> None:
        bed = MixBed(tmp_path)
        try:
            await bed.up_mixed()
            await check(bed)
        finally:
            await bed.down()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_to_a_sidecar_pod_mtls_as_the_source_pod_verified_as_the_endpoint(
        tmp_path: Path) -> None:
    async def check(bed: MixBed) -> None:
        r, w = await bed.connect(dest=(SIDE_VIP, 80))
        assert await roundtrip(r, w, b"hello sidecar") == b"hello sidecar"
        assert bed.seen == [(CLIENT_ID, "hm-tcp", b"hello sidecar")]
        assert bed.made == [("default", "client-0")]  # dialled as the source pod
        metrics = bed.proxies["n1"].ctx.metrics.exposition().decode()
        assert 'destination_principal="spiffe://cluster.local/ns/default/sa/side"' in metrics
        # stat's L4 signals: one attempt on the edge, ok, with its setup latency
        [attempt] = [line for line in metrics.splitlines()
                     if line.startswith("tcp_connect_total{")]
        assert all(label in attempt for label in (
            'outcome="ok"', 'reporter="source"', 'source_workload="client"',
            'destination_workload="side"')) and attempt.endswith(" 1.0")
        assert any(line.startswith("tcp_connect_latency_ms_count{") and line.endswith(" 1.0")
                   for line in metrics.splitlines())
        w.close()

    run(tmp_path, check)


def test_an_imposter_at_the_sidecars_address_gets_no_byte(tmp_path: Path) -> None:
    async def check(bed: MixBed) -> None:
        r, w = await bed.connect(dest=(FAKE_VIP, 80))
        assert await roundtrip(r, w, b"secret") == b""  # closed: secure naming failed
        await asyncio.sleep(0.1)
        assert [data for _, _, data in bed.seen] in ([], [b""])
        assert bed.proxies["n1"].ctx.metrics.refused("peer-identity") == 1
        assert bed.proxies["n1"].ctx.metrics.connects("failed") == 1
        assert bed.proxies["n1"].ctx.metrics.connects("ok") == 0
        w.close()

    run(tmp_path, check)


def test_to_a_kernel_pod_plain_tcp_from_the_source_pods_socket(tmp_path: Path) -> None:
    async def check(bed: MixBed) -> None:
        r, w = await bed.connect(dest=(KERNEL_VIP, 80))
        assert await roundtrip(r, w, b"plain") == b"plain"
        assert bed.made == [("default", "client-0")]
        w.close()

    run(tmp_path, check)


def test_no_source_namespace_refuses_rather_than_dial_as_the_node(tmp_path: Path) -> None:
    async def check(bed: MixBed) -> None:
        def gone(_ns: str, _pod: str) -> socket.socket:
            raise FileNotFoundError(2, "no network namespace")

        bed.proxies["n1"].ctx.source_socket = gone
        r, w = await bed.connect(dest=(KERNEL_VIP, 80))
        assert await roundtrip(r, w, b"plain") == b""
        assert bed.proxies["n1"].ctx.metrics.refused("no-source-netns") == 1
        w.close()

    run(tmp_path, check)
