"""One datapath as the agent runs it: every call serialized on one thread, every failure counted.

Datapaths make blocking bpf(2) calls and are not required to be thread-safe, so all their
methods run on a single worker thread (:class:`DatapathPool`), never on the event loop and
never two at once. A :class:`Slot` remembers what the last ``sync`` achieved — the version and
the local pods it covered, or the error — which is what "has this pod been programmed?" asks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hybridmesh.agent.datapath import Datapath, FlowEvent, NodeState

__all__ = ["DatapathPool", "Slot", "SyncRecord"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class DatapathPool:
    """A one-thread executor: datapath calls run one after another, off the event loop."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hm-datapath")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class SyncRecord:
    ok: bool = False
    version: int | None = None
    pods: frozenset[str] = frozenset()  # local pods (for its placements or not) at that version
    errors: int = 0
    last_error: str = ""
    event_errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "version": self.version,
            "errors": self.errors,
            "lastError": self.last_error,
            "eventErrors": self.event_errors,
        }


@dataclass
class Slot:
    """A datapath plus the outcome of its last sync."""

    feature: str  # the module's feature name (dp_<feature>.py)
    datapath: Datapath
    record: SyncRecord = field(default_factory=SyncRecord)

    @property
    def name(self) -> str:
        return getattr(self.datapath, "name", self.feature)

    async def sync(self, pool: DatapathPool, state: NodeState) -> bool:
        """Run one sync; a failure is logged (first and every 20th), counted and kept."""
        try:
            await pool.call(self.datapath.sync, state)
        except Exception as exc:
            self.record.ok = False
            self.record.errors += 1
            self.record.last_error = f"{type(exc).__name__}: {exc}"
            if self.record.errors == 1 or self.record.errors % 20 == 0:
                log.warning("datapath %s: sync failed (%d so far): %s", self.name,
                            self.record.errors, self.record.last_error, exc_info=True)
            return False
        self.record.ok, self.record.version = True, state.version
        self.record.pods = frozenset(p.key for p in state.local())
        return True

    async def drain(self, pool: DatapathPool) -> list[FlowEvent]:
        try:
            return await pool.call(self.datapath.drain_events)
        except Exception as exc:
            self.record.event_errors += 1
            if self.record.event_errors == 1 or self.record.event_errors % 100 == 0:
                log.warning("datapath %s: drain_events failed: %s", self.name, exc)
            return []

    async def status(self, pool: DatapathPool) -> dict[str, Any]:
        try:
            doc = (await pool.call(self.datapath.status)).to_json()
        except Exception as exc:
            doc = {"name": self.name, "programs": [], "maps": [], "detail": {},
                   "error": f"status failed: {type(exc).__name__}: {exc}"}  # fmt: skip
        return {**doc, "feature": self.feature, "sync": self.record.to_json()}

    async def close(self, pool: DatapathPool, remove: bool = False) -> None:
        try:
            await pool.call(self.datapath.remove if remove else self.datapath.close)
        except Exception:
            log.exception("datapath %s: %s failed", self.name, "remove" if remove else "close")

    def programmed(self, pod_key: str, version: int, placement: str | None = None) -> bool:
        """Synced at ``version`` or later with the pod local; trivially so for a datapath
        that does not serve the pod's placement."""
        if not self.datapath.gates_pods:
            return True
        if placement is not None and not self.datapath.serves(placement):
            return True
        r = self.record
        return r.ok and r.version is not None and r.version >= version and pod_key in r.pods
