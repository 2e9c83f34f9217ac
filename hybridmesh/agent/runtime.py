"""The node agent: follows its node snapshot, keeps every datapath in sync, buffers flows.

Three loops, one state:

- *watch*: long-polls ``/v1/snapshots/nodes/<node>`` on the control socket (the same xDS-like
  protocol the proxies use) and keeps the newest snapshot;
- *sync*: turns the snapshot into a :class:`NodeState` and calls every datapath's ``sync`` —
  after each new snapshot, again soon when a local pod's cgroup/netns is not there yet or a
  datapath failed (back-off up to :data:`RETRY_MAX`), and every :data:`RESYNC_PERIOD` anyway;
- *drain*: every :data:`DRAIN_PERIOD` collects flow events, stamps pods, buffers them.

Nothing here survives the process except what datapaths pinned: a restarted agent rebuilds all
of it from the control plane, and its datapaths take over pinned maps and links.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridmesh._aio import TaskSet
from hybridmesh._http import HttpClient, HttpClientError
from hybridmesh.agent.datapath import NodeState
from hybridmesh.agent.events import FlowBuffer, stamp
from hybridmesh.agent.registry import Broken, Discovered, discover
from hybridmesh.agent.slots import DatapathPool, Slot
from hybridmesh.agent.state import NETNS_DIR, SnapshotError, build_state

__all__ = ["DRAIN_PERIOD", "RESYNC_PERIOD", "Agent", "AgentConfig", "PodVerdict"]

log = logging.getLogger("hybridmesh.agent")

DRAIN_PERIOD = 0.1
RESYNC_PERIOD = 10.0
PENDING_RETRY = 0.1
RETRY_MAX = 5.0
WATCH_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class AgentConfig:
    node: str
    control_socket: Path
    cgroup_v2: Path
    netns_dir: Path = NETNS_DIR
    flow_capacity: int = 10_000
    cold: bool = False  # remove every pin first (a cold start) instead of taking them over


@dataclass(frozen=True, slots=True)
class PodVerdict:
    pod: str
    programmed: bool
    version: int | None  # the node snapshot version the agent last synced
    waiting_for: tuple[str, ...]  # what is missing: "snapshot", "cgroup", datapath names

    def to_json(self) -> dict[str, Any]:
        return {"pod": self.pod, "programmed": self.programmed, "version": self.version,
                "waitingFor": list(self.waiting_for)}  # fmt: skip


class Agent:
    def __init__(self, config: AgentConfig, discovered: Discovered | None = None) -> None:
        self.config = config
        self.node = config.node
        self.flows = FlowBuffer(config.flow_capacity)
        self.started_at = time.time()
        self.snapshot: dict[str, Any] | None = None
        self.state: NodeState | None = None
        self.pending: tuple[str, ...] = ()
        self.slots: list[Slot] = []
        self.broken: tuple[Broken, ...] = ()
        self.sync_passes = 0
        self.watch_errors = 0
        self._discovered = discovered
        self._pool = DatapathPool()
        self._dirty = asyncio.Event()
        self._synced = asyncio.Event()
        self._tasks = TaskSet()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        found = self._discovered
        if found is None:
            found = await self._pool.call(discover, self.node)
        self.slots = [Slot(feature, dp) for feature, dp in found.datapaths]
        self.broken = found.broken
        if self.config.cold:
            for slot in self.slots:
                await slot.close(self._pool, remove=True)
        log.info("node %s: datapaths %s%s", self.node, [s.name for s in self.slots],
                 f"; broken {[b.module for b in self.broken]}" if self.broken else "")
        self._tasks.spawn(self._watch_loop(), name="watch")
        self._tasks.spawn(self._sync_loop(), name="sync")
        self._tasks.spawn(self._drain_loop(), name="drain")

    async def stop(self) -> None:
        """Stop the loops, then close every datapath: pins and attachments stay."""
        await self._tasks.cancel_all()
        for slot in self.slots:
            await slot.close(self._pool)
        self._pool.shutdown()

    # -- watch -------------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        client = HttpClient(unix_path=str(self.config.control_socket))
        version, backoff = -1, 0.1
        path = f"/v1/snapshots/nodes/{self.node}"
        try:
            while True:
                try:
                    url = f"{path}?after={version}&timeout={WATCH_TIMEOUT:g}"
                    resp = await client.request("GET", url, timeout=WATCH_TIMEOUT + 10)
                    if resp.status == 404:  # our node is gone: the lab stops us soon
                        raise HttpClientError(f"control plane has no node {self.node}")
                    if resp.status == 200:
                        version = self._accept(resp.json_body(), version)
                    elif resp.status != 304:
                        raise HttpClientError(f"GET {url}: status {resp.status}")
                    backoff = 0.1
                except (HttpClientError, OSError, ValueError) as exc:
                    self.watch_errors += 1
                    if self.watch_errors == 1 or self.watch_errors % 50 == 0:
                        log.warning("control plane watch: %s; retrying", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
        finally:
            await client.close()

    def _accept(self, doc: Any, version: int) -> int:
        new = doc.get("version") if isinstance(doc, dict) else None
        if not isinstance(new, int):
            raise ValueError("node snapshot without an integer version")
        self.snapshot = doc
        self._dirty.set()
        return new

    # -- sync --------------------------------------------------------------------------
    async def _sync_loop(self) -> None:
        delay = RESYNC_PERIOD
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), delay)
            self._dirty.clear()
            ok = await self.sync_once()
            failures = 0 if ok else failures + 1
            if not ok:
                delay = min(0.2 * 2 ** min(failures, 5), RETRY_MAX)
            elif self.pending:
                delay = PENDING_RETRY
            else:
                delay = RESYNC_PERIOD

    async def sync_once(self) -> bool:
        """One pass over every datapath; True when all of them succeeded."""
        if self.snapshot is None:
            return True
        try:
            built = build_state(self.snapshot, self.node, self.config.cgroup_v2,
                                netns_dir=self.config.netns_dir)
        except SnapshotError as exc:
            log.error("snapshot ignored: %s", exc)
            return True  # nothing to retry until the control plane sends another
        self.state, self.pending = built.state, built.pending
        results = [await slot.sync(self._pool, built.state) for slot in self.slots]
        self.sync_passes += 1
        self._synced.set()
        self._synced = asyncio.Event()
        return all(results)

    def request_sync(self) -> None:
        self._dirty.set()

    async def wait_synced(self, timeout: float) -> None:
        """Wait for the next sync pass to finish (or ``timeout``)."""
        synced = self._synced
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(synced.wait(), timeout)

    # -- drain -------------------------------------------------------------------------
    async def _drain_loop(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_PERIOD)
            await self.drain_once()

    async def drain_once(self) -> int:
        added = 0
        for slot in self.slots:
            events = await slot.drain(self._pool)
            if events:
                added += self.flows.extend(stamp(e, self.state, self.node) for e in events)
        return added

    # -- queries -----------------------------------------------------------------------
    def pod_verdict(self, pod_key: str, version: int = 0) -> PodVerdict:
        """Has every datapath synced a state (at ``version`` or later) with this pod local?"""
        synced = self.state.version if self.state is not None else None
        if self.state is None:
            return PodVerdict(pod_key, False, synced, ("snapshot",))
        if pod_key in self.pending:
            return PodVerdict(pod_key, False, synced, ("cgroup",))
        pod = next((p for p in self.state.pods if p.key == pod_key and p.local), None)
        placement = pod.placement if pod is not None else None
        missing = tuple(
            s.name for s in self.slots if not s.programmed(pod_key, version, placement)
        )
        if pod is None:
            missing = ("snapshot", *missing)
        return PodVerdict(pod_key, not missing, synced, missing)

    async def status(self) -> dict[str, Any]:
        datapaths = [await slot.status(self._pool) for slot in self.slots]
        datapaths += [{"name": b.module, "feature": b.module, "programs": [], "maps": [],
                       "detail": {}, "error": b.error} for b in self.broken]  # fmt: skip
        return {
            "node": self.node,
            "pid": os.getpid(),
            "startedAt": self.started_at,
            "version": self.state.version if self.state else None,
            "syncPasses": self.sync_passes,
            "pendingPods": list(self.pending),
            "watchErrors": self.watch_errors,
            "flows": {
                "buffered": len(self.flows),
                "seq": self.flows.seq,
                "dropped": self.flows.dropped,
            },
            "datapaths": datapaths,
        }
