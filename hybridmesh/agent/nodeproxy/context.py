"""What every connection handler of one node proxy process shares (no globals)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from hybridmesh._aio import TaskSet
from hybridmesh.agent.nodeproxy.identities import NodeIdentities
from hybridmesh.agent.nodeproxy.limits import Limiter, Limits
from hybridmesh.agent.nodeproxy.metrics import NodeProxyMetrics
from hybridmesh.agent.nodeproxy.source import SourceResolver
from hybridmesh.agent.nodeproxy.tunnels import TunnelPool
from hybridmesh.agent.nodeproxy.upstream import SocketFactory, plain_socket
from hybridmesh.agent.nodeproxy.view import NodeView
from hybridmesh.proxy.config import TUNNEL_PORT

__all__ = ["PROXY_MARK", "NodeConfig", "NodeContext"]

PROXY_MARK: Final = 0x539
"""SO_MARK on the node proxy's own sockets (the sidecar's 1337): steering programs skip them."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node: str
    control_socket: str
    token_file: str
    outbound: tuple[str, int] = ("0.0.0.0", 15001)
    tunnel: tuple[str, int] = ("0.0.0.0", 15008)
    admin: tuple[str, int] = ("0.0.0.0", 15020)
    peers: tuple[tuple[str, str], ...] = ()  # node -> tunnel IP overrides
    limits: Limits = field(default_factory=Limits)
    connect_timeout_s: float = 5.0
    drain_timeout_s: float = 3600.0
    mark: int | None = PROXY_MARK


class NodeContext:
    """The node proxy's shared state; handlers read ``view`` once per connection."""

    def __init__(self, config: NodeConfig, resolver: SourceResolver,
                 identities: NodeIdentities, tasks: TaskSet,
                 source_socket: SocketFactory = plain_socket) -> None:
        self.config = config
        self.source_socket = source_socket  # sockets in a source pod's netns (upstream.py)
        self.resolver = resolver
        self.identities = identities
        self.tasks = tasks
        self.view: NodeView | None = None
        self.metrics = NodeProxyMetrics()
        self.outbound_limits = Limiter(config.limits)
        self.inbound_limits = Limiter(config.limits)
        self.pool = TunnelPool(tasks, mark=config.mark)
        # a sidecar pod's HBONE port, by pod IP (sidecar.py): 15008; tests move it
        self.sidecar_hbone_port: Callable[[str], int] = lambda _ip: TUNNEL_PORT
        self.rng = random.Random()
        self.draining = False
        self.active = 0  # open connections and streams this process carries
        self.metrics.gauges = self._gauges

    def tunnel_address(self, node: str) -> str | None:
        """Where ``node``'s proxy listens: ``--peer`` override, else the snapshot's fabric IP."""
        for name, ip in self.config.peers:
            if name == node:
                return ip
        view = self.view
        return view.nodes.get(node) if view is not None else None

    def _gauges(self) -> tuple[dict[str, int], int]:
        usage = self.outbound_limits.usage()
        return ({k: v["connections"] for k, v in usage.items()}, len(self.identities.held))
