"""The proxy process imports only what HTTP/1 and TCP need: h2/hpack (HTTP/2) come at the
first HTTP/2 use, prometheus_client never (the exposition is rendered by our own code)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

_HEAVY = ("h2", "hpack", "hyperframe", "prometheus_client", "hybridmesh.proxy.h2session",
          "hybridmesh.proxy.h2upstream", "hybridmesh.proxy.protocols.http2")

_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    HEAVY = {heavy!r}
    import hybridmesh.proxy.__main__  # the process's entry point
    print("import", sorted(m for m in (*HEAVY, "tempfile", "ctypes") if m in sys.modules))
    from hybridmesh.proxy.config import ProxyConfig
    from hybridmesh.proxy.testing import FakeControlPlane, endpoint, pod_snapshot, service
    from hybridmesh.proxy.worker import Worker

    async def backend(reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")
        await writer.drain()
        writer.close()

    async def main(tmp):
        server = await asyncio.start_server(backend, "127.0.0.2", 0)
        port = server.sockets[0].getsockname()[1]
        cp = FakeControlPlane(tmp + "/cp.sock")
        await cp.start()
        web = service("web", "10.96.0.10", [(80, port)], [endpoint("web-0", "127.0.0.2")])
        cp.set("default/c-0", pod_snapshot("c-0", "127.0.0.1", [web]))
        config = ProxyConfig(namespace="default", pod="c-0", control_socket=tmp + "/cp.sock",
                             outbound_port=0, inbound_port=0, admin_port=0,
                             bind_host="127.0.0.1", mark=None)
        worker = Worker(config, original_dst=lambda s, d: ("10.96.0.10", 80))
        await worker.start()
        await worker.wait_ready(5)
        r, w = await asyncio.open_connection("127.0.0.1", worker.outbound_port)
        w.write(b"GET / HTTP/1.1\\r\\nhost: web\\r\\n\\r\\n")
        head = await r.readuntil(b"\\r\\n\\r\\n")
        w.close()
        print("status", head.split()[1].decode())
        worker.ctx.metrics.exposition()
        await worker.close()
        await cp.close()
        server.close()

    asyncio.run(main(sys.argv[1]))
    print("served", sorted(m for m in HEAVY if m in sys.modules))
""")


def test_http1_proxy_never_imports_h2_or_prometheus_client(tmp_path: Path) -> None:
    script = _SCRIPT.format(heavy=_HEAVY)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False,
                         capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines == {"import": "[]", "status": "200", "served": "[]"}, out.stdout


_MTLS_SCRIPT = textwrap.dedent("""
    import asyncio, socket, sys
    HEAVY = {heavy!r}
    import hybridmesh.proxy.__main__, hybridmesh.proxy.mtls
    from hybridmesh.proxy.h2pool import H2Pool
    from hybridmesh.proxy.hbone_listen import HboneListener

    async def main():
        H2Pool(mark=None, connect_timeout=1.0)  # what MeshTls makes per peer identity
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        listener = HboneListener(object(), sock)  # bound, not yet served
        print("bound", sorted(m for m in HEAVY if m in sys.modules))
        listener.close()
        await listener.wait_closed()

    asyncio.run(main())
""")


def test_mtls_worker_loads_http2_only_when_it_is_used() -> None:
    """An mTLS worker makes an HTTP/2 pool per peer identity and binds the HBONE port at
    start; neither may pull in h2/hpack before an HTTP/2 connection exists."""
    script = _MTLS_SCRIPT.format(heavy=(*_HEAVY, "hybridmesh.proxy.hbone_server"))
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "bound []", out.stdout
