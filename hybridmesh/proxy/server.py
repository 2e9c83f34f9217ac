"""The proxy process: one worker in-process, or a supervisor of N worker processes.

``--workers 1`` (default): the worker and the admin server share one event loop.

``--workers N``: this process becomes a small supervisor. It starts N worker processes
(``python -m hybridmesh.proxy ... --worker-admin PATH``), each binding the listeners with
``SO_REUSEPORT`` and serving its own admin API on a private unix socket. The supervisor owns
:15020 and **aggregates**: ``/metrics`` sums the workers' series, ``/ready`` is true when all
are ready, ``/config_dump`` lists them. One scrape target per pod, as with one worker. Why
processes and not ``fork()`` after start: forking a process with a running event loop (and the
threads of the access log) is a hazard, and a fresh interpreter per worker can be restarted
alone when it crashes (the supervisor does, with a 1 s pause).

Signals: SIGTERM/SIGINT drain (a supervisor forwards SIGTERM and waits for every worker);
the exit status is 0 after a drain. A worker whose pod was deleted (snapshot 404) drains and
exits 0, and the supervisor then stops the others.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from hybridmesh._http import HttpClient, HttpClientError, Response, install_uvloop
from hybridmesh.proxy.admin import AdminSource, merge_expositions, start_admin
from hybridmesh.proxy.config import ProxyConfig, to_argv
from hybridmesh.proxy.worker import ListenError, Worker

__all__ = ["run", "run_worker", "serve_single", "settle_gc", "supervise"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_SETTLE_WAIT_S = 30.0


def _die_with_parent() -> None:
    """A worker must not outlive its supervisor (SIGKILL leaves no chance to forward)."""
    import ctypes  # here: a single-worker proxy never needs it (~0.3 MB)

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _worker_source(worker: Worker) -> AdminSource:
    async def ready() -> bool:
        return worker.ready

    async def metrics() -> bytes:
        return worker.exposition()

    async def config_dump() -> dict[str, Any]:
        return worker.config_dump()

    return AdminSource(ready, metrics, config_dump, worker.request_drain)


def _on_signals(callback: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


async def settle_gc(worker: Worker) -> None:
    """Once the worker serves (first snapshot, and with mTLS its first SVID): collect the
    start-up garbage, then ``gc.freeze()`` what is alive (modules, code, tables, contexts:
    ~25k objects) so no later collection traverses it. Why: a full collection over them
    takes 6-15 ms on the bench machine, one loop stall that every request arriving
    meanwhile waits out (at 1000 req/s, close to 1 % of a 2 s run); frozen, a full
    collection covers only what was made since. The process's own main calls this, not
    the Worker: tests embed many workers in one interpreter and must keep a normal GC."""
    await worker.wait_ready()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _SETTLE_WAIT_S
    while not worker.ready and not worker.ctx.draining and loop.time() < deadline:
        await asyncio.sleep(0.05)
    gc.collect()
    gc.freeze()


async def serve_single(config: ProxyConfig, *, admin_unix: str | None = None) -> int:
    """Run one worker (and its admin API) until it has drained; the exit status."""
    worker = Worker(config)
    try:
        await worker.start()
        source = _worker_source(worker)
        admin, _ = await start_admin(source, host=config.admin_host, port=config.admin_port,
                                     unix_path=admin_unix)
    except ListenError as exc:
        print(f"hm-proxy: {exc.strerror}", file=sys.stderr)
        await worker.close()
        return 1
    _on_signals(worker.request_drain)
    worker.ctx.tasks.spawn(settle_gc(worker), name="hm-proxy-settle-gc")
    if worker.ctx.mtls is not None:
        worker.ctx.mtls.identity.install_signal()  # SIGUSR1: renew the SVID now
    print(f"hm-proxy {config.pod_key}: outbound :{worker.outbound_port} inbound "
          f":{worker.inbound_port} admin :{config.admin_port}", file=sys.stderr, flush=True)
    await worker.wait_stopped()
    await admin.close(timeout=1.0)
    return 0


def run_worker(config: ProxyConfig, admin_unix: str) -> int:
    """A supervised worker process's main."""
    _die_with_parent()
    install_uvloop()
    return asyncio.run(serve_single(config, admin_unix=admin_unix))


class _Supervisor:
    """Starts, watches and stops the worker processes; answers the aggregated admin API."""

    def __init__(self, config: ProxyConfig, sockdir: Path) -> None:
        self.config = config
        self.sockdir = sockdir
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = False

    def admin_path(self, index: int) -> str:
        return str(self.sockdir / f"w{index}.sock")

    async def spawn(self, index: int) -> None:
        argv = [*to_argv(self.config), "--worker-admin", self.admin_path(index)]
        optimize = ["-" + "O" * sys.flags.optimize] if sys.flags.optimize else []  # -OO: lab
        self.procs[index] = await asyncio.create_subprocess_exec(
            sys.executable, *optimize, "-m", "hybridmesh.proxy", *argv
        )

    async def watch(self, index: int) -> None:
        while True:
            proc = self.procs[index]
            code = await proc.wait()
            if self.stopping:
                return
            if code == 0:  # drained on its own: the pod was deleted
                self.stop()
                return
            log.error("proxy worker %d exited with %s; restarting", index, code)
            await asyncio.sleep(1.0)
            await self.spawn(index)

    def forward(self, sig: int) -> None:
        """Pass a signal on to every running worker (SIGUSR1: renew SVIDs)."""
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(sig)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async def _each(self, path: str) -> list[Response | None]:
        out: list[Response | None] = []
        for i in sorted(self.procs):
            try:
                async with HttpClient(unix_path=self.admin_path(i)) as client:
                    out.append(await client.request("GET", path, timeout=5.0))
            except (HttpClientError, OSError):
                out.append(None)
        return out

    def source(self) -> AdminSource:
        async def ready() -> bool:
            answers = await self._each("/ready")
            return not self.stopping and all(a is not None and a.status == 200 for a in answers)

        async def metrics() -> bytes:
            answers = await self._each("/metrics")
            return merge_expositions(a.body for a in answers if a is not None and a.status == 200)

        async def config_dump() -> dict[str, Any]:
            answers = await self._each("/config_dump")
            return {"workers": [a.json_body() if a is not None else None for a in answers]}

        return AdminSource(ready, metrics, config_dump, self.stop)


async def supervise(config: ProxyConfig) -> int:
    """Run ``config.workers`` worker processes behind one aggregated admin endpoint."""
    import tempfile  # here: pulls in shutil, bz2, lzma (~0.7 MB) a single worker never uses

    with tempfile.TemporaryDirectory(prefix="hm-proxy-") as tmp:
        sup = _Supervisor(config, Path(tmp))
        _on_signals(sup.stop)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, sup.forward,
                                                      signal.SIGUSR1)
        try:
            admin, _ = await start_admin(sup.source(), host=config.admin_host,
                                         port=config.admin_port)
        except OSError as exc:
            print(f"hm-proxy: cannot listen on admin port {config.admin_port}: {exc.strerror}",
                  file=sys.stderr)
            return 1
        for i in range(config.workers):
            await sup.spawn(i)
        await asyncio.gather(*(sup.watch(i) for i in range(config.workers)))
        await admin.close(timeout=1.0)
    return 0


def run(config: ProxyConfig) -> int:
    """The process's main: the exit status."""
    install_uvloop()
    if config.workers == 1:
        return asyncio.run(serve_single(config))
    return asyncio.run(supervise(config))
