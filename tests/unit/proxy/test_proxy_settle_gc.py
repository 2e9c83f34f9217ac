"""The proxy process freezes its start-up objects out of the GC once it serves (server.py
``settle_gc``), and not before: a snapshot that has not arrived yet is not frozen early."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

_SCRIPT = textwrap.dedent("""
    import asyncio, gc, sys
    from hybridmesh.proxy.config import ProxyConfig
    from hybridmesh.proxy.server import settle_gc
    from hybridmesh.proxy.testing import FakeControlPlane, pod_snapshot
    from hybridmesh.proxy.worker import Worker

    async def main(tmp):
        cp = FakeControlPlane(tmp + "/cp.sock")
        await cp.start()
        config = ProxyConfig(namespace="default", pod="c-0", control_socket=tmp + "/cp.sock",
                             outbound_port=0, inbound_port=0, admin_port=0,
                             bind_host="127.0.0.1", mark=None)
        cp.set("default/c-0", pod_snapshot("c-0", "127.0.0.1"))
        worker = Worker(config)
        settling = asyncio.ensure_future(settle_gc(worker))
        await asyncio.sleep(0.3)  # no snapshot yet: the worker is not watching
        print("before-snapshot", settling.done(), gc.get_freeze_count())
        await worker.start()
        await asyncio.wait_for(settling, 10)
        frozen = gc.get_freeze_count()
        print("after-snapshot", frozen > 5000, len(gc.get_objects()) < frozen // 4)
        await worker.close()
        await cp.close()

    asyncio.run(main(sys.argv[1]))
""")


def test_start_up_objects_are_frozen_once_the_worker_serves(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], check=False,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["before-snapshot False 0",
                                       "after-snapshot True True"], out.stdout
