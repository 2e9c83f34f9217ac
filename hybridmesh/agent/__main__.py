"""``python -m hybridmesh.agent --node NAME``: the node agent process.

Holds a BPF_ENABLE_STATS fd for its lifetime, so programs' run_cnt/run_time_ns count while any
agent runs and stop counting when the last one exits — no sysctl to restore after a crash
(``kernel.bpf_stats_enabled`` would stay on machine-wide if ``lab down`` never ran).

SIGTERM/SIGINT: stop the loops, close every datapath (pins and links stay, so the kernel goes
on balancing and enforcing), remove the API socket, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from hybridmesh import env as hm_env
from hybridmesh._http import HttpServer, install_uvloop
from hybridmesh.agent.api import build_router
from hybridmesh.agent.client import agent_socket
from hybridmesh.agent.runtime import Agent, AgentConfig

log = logging.getLogger("hybridmesh.agent")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hybridmesh.agent", description=__doc__)
    parser.add_argument("--node", required=True, help="the lab node this agent runs")
    parser.add_argument("--cold", action="store_true",
                        help="remove this node's pins first instead of taking them over")
    parser.add_argument("--control-socket", type=Path, default=None)
    parser.add_argument("--socket", type=Path, default=None, help="where to serve the API")
    return parser.parse_args(argv)


def _cgroup_v2() -> Path:
    from hybridmesh.lab.cgroups import detect_layout

    return detect_layout().v2


def _enable_stats() -> int | None:
    try:
        from hybridmesh.ebpf._libbpf import enable_run_stats

        return enable_run_stats()
    except Exception as exc:
        log.warning("BPF run-time stats unavailable: %s", exc)
        return None


async def run(args: argparse.Namespace) -> None:
    config = AgentConfig(
        node=args.node,
        control_socket=args.control_socket or hm_env.control_socket(),
        cgroup_v2=_cgroup_v2(),
        cold=args.cold,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats_fd = _enable_stats()
    agent = Agent(config)
    await agent.start()
    sock = args.socket or agent_socket(args.node)
    sock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    server = HttpServer(build_router(agent))
    await server.start_unix(sock, mode=0o600)
    log.info("agent for node %s serving on %s (pid %d)", args.node, sock, os.getpid())
    try:
        await stop.wait()
    finally:
        log.info("stopping: closing datapaths, pins stay")
        await server.close(timeout=1)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        await agent.stop()
        if stats_fd is not None:
            os.close(stats_fd)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    install_uvloop()
    asyncio.run(run(_parse(argv)))


if __name__ == "__main__":
    main()
