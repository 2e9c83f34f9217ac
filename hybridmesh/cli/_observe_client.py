"""Reading flow events from every node agent, for ``hybridmesh observe``.

Each agent serves ``GET /v1/flows`` on its unix socket ``STATE_DIR/agents/<node>.sock``
(:mod:`hybridmesh.agent.api`): ``?last=N`` answers the newest N events as NDJSON with header
``X-Hm-Seq`` (the newest one's number); ``?follow=1&after=S&timeout=T`` is a long poll that
answers the events after S as soon as there is one (or nothing after T seconds).

``--last`` merges the nodes' answers in time order; ``-f`` runs one long-poll loop a node in a
thread and hands their events to the printing thread through a queue, in arrival order (nodes
are not reordered against each other: a flow is printed when it is known, as Hubble does).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hybridmesh._http.sync import UnixRequestError, unix_request
from hybridmesh.agent.datapath import FlowEvent
from hybridmesh.cli._observe_filter import BadFlowRecord, flow_from_json

__all__ = ["AgentError", "AgentFlows", "Batch", "Follower", "merge_last", "parse_ndjson"]

Request = Callable[..., tuple[int, dict[str, str], bytes]]


class AgentError(Exception):
    """One agent could not be read (not running, or it answered something unexpected)."""


@dataclass(frozen=True)
class Batch:
    """What one request to one agent returned."""

    node: str
    events: list[FlowEvent]
    seq: int  # the agent's number of the newest event it answered (or had)
    bad: int = 0  # lines that were not flow events (skipped)


def parse_ndjson(body: bytes) -> tuple[list[FlowEvent], int]:
    """The events of an NDJSON body and how many lines were not events."""
    events, bad = [], 0
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            events.append(flow_from_json(json.loads(line)))
        except (ValueError, BadFlowRecord):  # JSONDecodeError and UnicodeError are ValueErrors
            bad += 1
    return events, bad


@dataclass
class AgentFlows:
    """The agents of one lab: their sockets in ``directory``."""

    directory: Path
    request: Request = unix_request

    def nodes(self) -> list[str]:
        try:
            return sorted(p.stem for p in self.directory.glob("*.sock"))
        except OSError:
            return []

    def _get(self, node: str, path: str, timeout: float) -> Batch:
        sock = self.directory / f"{node}.sock"
        try:
            code, headers, body = self.request(str(sock), "GET", path, timeout=timeout)
        except UnixRequestError as exc:
            raise AgentError(f"agent of node {node}: {exc}") from None
        if code != 200:
            text = body.decode(errors="replace").strip()
            raise AgentError(f"agent of node {node} answered {code} to {path}: {text}")
        events, bad = parse_ndjson(body)
        try:
            seq = int(headers.get("x-hm-seq", "0"))
        except ValueError:
            raise AgentError(f"agent of node {node}: bad X-Hm-Seq header") from None
        return Batch(node, events, seq, bad)

    def last(self, node: str, count: int, timeout: float = 10.0) -> Batch:
        return self._get(node, f"/v1/flows?last={count}", timeout)

    def after(self, node: str, seq: int, wait: float) -> Batch:
        """The events after ``seq``, waiting up to ``wait`` seconds for the first one."""
        return self._get(node, f"/v1/flows?follow=1&after={seq}&timeout={wait:g}", wait + 10)


def merge_last(
    batches: Iterable[Batch], count: int, keep: Callable[[FlowEvent], bool]
) -> list[FlowEvent]:
    """The newest ``count`` kept events of all nodes, oldest first."""
    kept = [e for b in batches for e in b.events if keep(e)]
    kept.sort(key=lambda e: (e.time_ns, e.node))
    return kept[-count:] if count > 0 else []


@dataclass
class Follower:
    """Long-poll loops (one thread a node) feeding :attr:`queue` with batches or errors."""

    source: AgentFlows
    wait: float = 30.0
    queue: queue.Queue[Batch | AgentError] = field(default_factory=queue.Queue)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, cursors: dict[str, int]) -> None:
        """Follow each node from its cursor (the ``seq`` of its last answer)."""
        for node, seq in cursors.items():
            thread = threading.Thread(target=self._loop, args=(node, seq), daemon=True,
                                      name=f"hm-observe-{node}")  # fmt: skip
            self._threads.append(thread)
            thread.start()

    def _loop(self, node: str, seq: int) -> None:
        while not self._stop.is_set():
            try:
                batch = self.source.after(node, seq, self.wait)
            except AgentError as exc:
                self.queue.put(exc)  # the agent went away: this node's stream ends
                return
            seq = batch.seq
            if batch.events or batch.bad:
                self.queue.put(batch)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        """Ask the loops to end after their current poll (they are daemon threads)."""
        self._stop.set()
