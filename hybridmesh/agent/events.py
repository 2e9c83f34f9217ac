"""The agent's flow buffer: the last N flow events, stamped with pods, numbered for followers.

Datapaths hand over raw :class:`~hybridmesh.agent.datapath.FlowEvent` s (addresses only);
:func:`stamp` adds the node and the ``ns/name`` of each end it knows. The buffer is bounded
(oldest dropped first, counted) and every event gets a sequence number, so a follower asks
"everything after seq S" and loses nothing while it keeps up — the same long-poll shape as
the control plane's snapshot watch, because the project's HTTP server sends whole responses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from dataclasses import replace

from hybridmesh.agent.datapath import FlowEvent, NodeState

__all__ = ["DEFAULT_CAPACITY", "FlowBuffer", "stamp"]

DEFAULT_CAPACITY = 10_000


def stamp(event: FlowEvent, state: NodeState | None, node: str) -> FlowEvent:
    """The event with ``node`` and the pods at each end filled in where they were not yet."""
    src = event.src_pod or _pod_key(state, event.src_ip)
    dst = event.dst_pod or _pod_key(state, event.dst_ip)
    return replace(event, node=event.node or node, src_pod=src, dst_pod=dst)


def _pod_key(state: NodeState | None, ip: str) -> str | None:
    pod = state.pod_by_ip(ip) if state is not None else None
    return pod.key if pod is not None else None


class FlowBuffer:
    """Bounded, numbered event history with an async wait for new events."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._events: deque[tuple[int, FlowEvent]] = deque(maxlen=capacity)
        self._seq = 0
        self.dropped = 0  # pushed out by newer events before anyone could have read them all
        self._arrived = asyncio.Event()

    @property
    def seq(self) -> int:
        """The number of the newest event (0 before the first)."""
        return self._seq

    def __len__(self) -> int:
        return len(self._events)

    def extend(self, events: Iterable[FlowEvent]) -> int:
        """Append events; returns how many were added."""
        added = 0
        for event in events:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1
            self._seq += 1
            self._events.append((self._seq, event))
            added += 1
        if added:
            self._arrived.set()
            self._arrived = asyncio.Event()
        return added

    def last(self, n: int) -> list[tuple[int, FlowEvent]]:
        """The newest ``n`` events, oldest first."""
        if n <= 0:
            return []
        return list(self._events)[-n:]

    def after(self, seq: int, limit: int | None = None) -> list[tuple[int, FlowEvent]]:
        """Events numbered above ``seq``, oldest first (at most ``limit``)."""
        out = [item for item in self._events if item[0] > seq]
        return out[:limit] if limit is not None else out

    async def wait_after(self, seq: int, timeout: float) -> list[tuple[int, FlowEvent]]:
        """Like :meth:`after`, but wait up to ``timeout`` seconds for the first new event."""
        if seq >= self._seq:
            arrived = self._arrived
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), timeout)
        return self.after(seq)
