"""A node pod's connections to pods of other placements (docs/node.md §4), on loopback.

- to a ``sidecar`` pod: an HBONE stream as the source pod (tests/unit/proxy/
  test_hbone_sidecar.py, with a real sidecar engine);
- to a ``kernel`` pod: plain TCP from a socket made by the source pod's socket factory (in the
  lab: the pod's own netns, so the kernel pod's L4 policy judges the pod's address).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from nodeproxy_bed import Bed, echo_server, roundtrip

from hybridmesh.proxy.testing import endpoint, service

KERNEL_IP, KERNEL_VIP = "127.0.0.9", "10.96.0.14"


class MixBed(Bed):
    """The loopback bed plus a kernel pod."""

    kernel_port = 0
    made: list[tuple[str, str]]

    def services(self) -> list[dict[str, Any]]:
        def one(name: str, vip: str, ip: str, port: int, placement: str) -> dict[str, Any]:
            ep = endpoint(f"{name}-0", ip, placement=placement, service_account="side"
                          if name != "kernel" else "kernel", node="n2")
            return service(name, vip, [(80, port)], [ep])

        return [*super().services(),
                one("kernel", KERNEL_VIP, KERNEL_IP, self.kernel_port, "kernel")]

    async def up_mixed(self) -> None:
        self.made = []
        await self.up()
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
