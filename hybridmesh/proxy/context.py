"""The state one proxy worker shares between its connections (nothing global).

Handlers read ``ctx.tables`` once per request (or connection) and keep that reference, so a
snapshot swapped in mid-request never changes what an in-flight request sees. Everything else
here (balancers, pools, metrics) is long-lived and owned by the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from hybridmesh._aio import TaskSet
from hybridmesh.proxy._sockopt import SockoptSocket, original_dst
from hybridmesh.proxy.balance import Balancers
from hybridmesh.proxy.config import ProxyConfig
from hybridmesh.proxy.discovery import Tables
from hybridmesh.proxy.upstream import Pool
from hybridmesh.telemetry.proxy_metrics import AccessLog, ProxyMetrics

if TYPE_CHECKING:
    from hybridmesh.proxy.h2pool import H2Pool
    from hybridmesh.proxy.mtls import MeshTls
    from hybridmesh.proxy.policy_hook import InboundAuthz

__all__ = ["Closable", "OriginalDst", "ProxyContext"]

OriginalDst = Callable[[SockoptSocket, str], "tuple[str, int] | None"]
"""(accepted socket, listener direction) → the pre-REDIRECT destination."""


class Closable(Protocol):
    """A live connection handler, closed (gracefully or not) when the worker drains."""

    @property
    def busy(self) -> bool: ...
    def close_when_idle(self) -> None: ...
    def abort(self) -> None: ...


def _kernel_original_dst(sock: SockoptSocket, _direction: str) -> tuple[str, int] | None:
    return original_dst(sock)


class ProxyContext:
    """One worker's shared state: tables, balancers, pools, telemetry, live connections."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        metrics: ProxyMetrics | None = None,
        access_log: AccessLog | None = None,
        rng: random.Random | None = None,
        original_dst: OriginalDst | None = None,
    ) -> None:
        self.config = config
        self.upgrade_h2 = config.upgrade_h2  # or the mesh's h2UpgradePolicy (install)
        self.proxy_name = config.pod_key
        self.rng = rng or random.Random()
        self.balancers = Balancers(self.rng)
        self.pool = Pool(mark=config.mark, connect_timeout=config.connect_timeout_s)
        self._h2pool: H2Pool | None = None
        self.mark = config.mark  # None once we know the process may not set SO_MARK
        self.metrics = metrics or ProxyMetrics()
        self.access_log = access_log or AccessLog(sys.stdout if config.access_log else None)
        self.original_dst: OriginalDst = original_dst or _kernel_original_dst
        self.tasks = TaskSet()
        self.connections: set[Closable] = set()
        self.draining = False
        self.requests = 0  # HTTP requests finished (for /config_dump; metrics have the detail)
        self._tables: Tables | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.mtls: MeshTls | None = None  # set by the worker when an identity is configured
        self.policy: InboundAuthz | None = None  # inbound AuthorizationPolicy (policy_hook)

    @property
    def tables(self) -> Tables | None:
        """The current tables; None until the first snapshot arrived."""
        return self._tables

    def install(self, tables: Tables) -> None:
        """Swap in a new snapshot's tables (balancer state of surviving endpoints is kept)."""
        self.balancers.sync(tables)
        mesh = tables.snapshot.get("mesh") or {}
        self.upgrade_h2 = self.config.upgrade_h2 or mesh.get("h2UpgradePolicy") == "UPGRADE"
        self._tables = tables

    @property
    def h2pool(self) -> H2Pool:
        """The HTTP/2 upstream pool, made at first use: h2 and hpack (~4 MB of a ~25 MB
        worker) are imported only once some request needs HTTP/2 upstream."""
        pool = self._h2pool
        if pool is None:
            from hybridmesh.proxy.h2pool import H2Pool

            pool = self._h2pool = H2Pool(mark=self.mark,
                                         connect_timeout=self.config.connect_timeout_s)
        return pool

    @property
    def h2pool_if_made(self) -> H2Pool | None:
        """The HTTP/2 pool if anything used it (upkeep and drain need not make one)."""
        return self._h2pool

    def disable_mark(self) -> None:
        """No CAP_NET_ADMIN: upstream sockets go unmarked (capture must exempt our uid)."""
        self.mark = None
        self.pool.mark = None
        if self._h2pool is not None:
            self._h2pool.mark = None

    def busy_connections(self) -> int:
        return sum(1 for c in self.connections if c.busy)

    def config_dump(self) -> dict[str, Any]:
        tables = self._tables
        return {
            "proxy": self.proxy_name,
            "config": {**dataclasses.asdict(self.config), "mark_in_use": self.mark},
            "tables": tables.config_dump() if tables is not None else None,
            "balancers": self.balancers.snapshot(),
            "connections": len(self.connections),
            "requests": self.requests,
            "idle_upstream": self.pool.idle_count(),
        }
