"""``python -m hybridmesh.agent.nodeproxy --node NAME [--takeover SOCKET] ...``

Runs the node proxy in the node's netns (``ip netns exec hm-node-<NAME> ...``). Exit codes: 0
after a drain (handover or node deleted), 2 for bad arguments or a failed takeover (the old
process keeps serving), 1 if the proxy cannot start (message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path

from hybridmesh import env
from hybridmesh._http import install_uvloop
from hybridmesh.agent.nodeproxy.context import PROXY_MARK, NodeConfig
from hybridmesh.agent.nodeproxy.handoff import HandoffError, Takeover, take_over
from hybridmesh.agent.nodeproxy.limits import Limits
from hybridmesh.agent.nodeproxy.server import NodeProxy
from hybridmesh.agent.nodeproxy.source import BpfSourceResolver, CgroupIndex, map_pin
from hybridmesh.agent.nodeproxy.upstream import plain_socket
from hybridmesh.agent.nodeproxy.view import LocalPod
from hybridmesh.ebpf.errors import BpfError
from hybridmesh.lab.names import LAB_CGROUP, pod_cgroup, pod_netns
from hybridmesh.lab.netns import socket_in

__all__ = ["default_handoff", "default_token_file", "main", "parse"]

_DEFAULTS = Limits()


def default_token_file(node: str) -> Path:
    """Where the lab writes the node token: ``/run/hm-lab/nodes/<node>/token`` (0400)."""
    return env.STATE_DIR / "nodes" / node / "token"


def default_handoff(node: str) -> Path:
    return env.STATE_DIR / "nodes" / node / "nodeproxy.sock"


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host or "0.0.0.0", int(port)


def _peer(text: str) -> tuple[str, str]:
    node, sep, ip = text.partition("=")
    if not sep or not node or not ip:
        raise argparse.ArgumentTypeError(f"{text!r} is not NODE=IP")
    return node, ip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hybridmesh.agent.nodeproxy")
    p.add_argument("--node", required=True)
    p.add_argument("--control", default=str(env.control_socket()))
    p.add_argument("--token-file", type=Path)
    p.add_argument("--outbound", type=_addr, default=("0.0.0.0", 15001))
    p.add_argument("--tunnel", type=_addr, default=("0.0.0.0", 15008))
    p.add_argument("--admin", type=_addr, default=("0.0.0.0", 15020))
    p.add_argument("--peer", type=_peer, action="append", default=[],
                   help="NODE=IP: where NODE's tunnel port is (default: the snapshot's nodes)")
    p.add_argument("--source-map", type=Path, help="pinned hm_node_src (default: bpffs)")
    p.add_argument("--cgroup-base", type=Path,
                   help="directory holding the pods' cgroups (default: <cgroup2>/hm-lab)")
    p.add_argument("--handoff", type=Path, help="unix socket a successor takes over from")
    p.add_argument("--takeover", type=Path, help="take the listeners of the proxy at SOCKET")
    p.add_argument("--max-connections", type=int, default=_DEFAULTS.max_connections)
    p.add_argument("--connection-rate", type=float, default=_DEFAULTS.rate)
    p.add_argument("--connection-burst", type=int, default=_DEFAULTS.burst)
    p.add_argument("--max-streams", type=int, default=_DEFAULTS.max_streams)
    p.add_argument("--drain-timeout", type=float, default=3600.0)
    p.add_argument("--node-netns-source", action="store_true",
                   help="dial kernel/none/outside destinations from the node netns, not the "
                        "source pod's (tests without pod netns; the destination then sees the "
                        "node's address)")
    p.add_argument("--no-mark", action="store_true", help="do not SO_MARK our own sockets")
    return p


def parse(argv: list[str] | None) -> tuple[NodeConfig, argparse.Namespace]:
    args = _parser().parse_args(argv)
    try:
        limits = Limits(args.max_connections, args.connection_rate, args.connection_burst,
                        args.max_streams)
    except ValueError as exc:
        _parser().error(str(exc))
    config = NodeConfig(
        node=args.node, control_socket=args.control,
        token_file=str(args.token_file or default_token_file(args.node)),
        outbound=args.outbound, tunnel=args.tunnel, admin=args.admin, peers=tuple(args.peer),
        limits=limits, drain_timeout_s=args.drain_timeout,
        mark=None if args.no_mark else PROXY_MARK,
    )  # fmt: skip
    return config, args


def _pod_socket(namespace: str, pod: str) -> socket.socket:
    """Relays to non-node destinations leave from the source pod's netns (``upstream.py``)."""
    return socket_in(pod_netns(namespace, pod))


def _cgroup_base(args: argparse.Namespace) -> Path:
    if args.cgroup_base is not None:
        return Path(args.cgroup_base)
    from hybridmesh.lab.cgroups import detect_layout

    return detect_layout().v2 / LAB_CGROUP


async def _run(config: NodeConfig, args: argparse.Namespace, takeover: Takeover | None) -> int:
    index = CgroupIndex()
    resolver = BpfSourceResolver(args.source_map or map_pin(config.node), index)
    base = _cgroup_base(args)

    def cgroup_of(pod: LocalPod) -> Path:
        return base / pod_cgroup(pod.namespace, pod.name)

    proxy = NodeProxy(config, resolver, index, cgroup_of,
                      handoff=args.handoff or default_handoff(config.node),
                      source_socket=plain_socket if args.node_netns_source else _pod_socket)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: proxy.tasks.spawn(proxy.hand_over()))
    try:
        await proxy.start(takeover.sockets if takeover else None)
        if takeover is not None:
            takeover.confirm()  # the old process now stops accepting and frees the admin port
        await proxy.start_control()
        await proxy.done.wait()
    finally:
        await proxy.close()
        resolver.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    config, args = parse(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="hm-nodeproxy %(levelname)s %(name)s: %(message)s")
    takeover = None
    if args.takeover is not None:
        try:
            takeover = take_over(args.takeover)
        except HandoffError as exc:
            print(f"hm-nodeproxy: {exc}", file=sys.stderr)
            return 2
    install_uvloop()
    try:
        return asyncio.run(_run(config, args, takeover))
    except (OSError, BpfError) as exc:
        print(f"hm-nodeproxy: cannot run: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
