"""The agent's HTTP API on ``STATE_DIR/agents/<node>.sock`` (root only, like the lab API).

- ``GET /v1/status`` — ``{"node", "datapaths": [DatapathStatus.to_json() + "sync"], ...}``
- ``GET /v1/pods/{ns}/{name}?version=V&wait=S`` — whether every datapath has programmed the
  pod at node snapshot version V or later; ``wait`` holds the answer up to S seconds until it
  is yes (the lab starts a pod's app only after that).
- ``GET /v1/flows?last=N`` — the newest N flow events as NDJSON (one ``FlowEvent.to_json()`` a
  line), header ``X-Hm-Seq``: the number of the newest one.
- ``GET /v1/flows?follow=1&after=S&timeout=T`` — events after S, held until at least one
  arrives (or T seconds); loop with the returned ``X-Hm-Seq`` to follow the stream. The
  project's HTTP server sends whole responses, so "follow" is a long poll, like the control
  plane's watch; :class:`hybridmesh.cli._observe_client.Follower` runs the loop.
"""

from __future__ import annotations

import json
import time

from hybridmesh._http.message import HttpError, Request, Response
from hybridmesh._http.router import Router
from hybridmesh.agent.datapath import FlowEvent
from hybridmesh.agent.runtime import Agent

__all__ = ["MAX_WAIT", "build_router", "ndjson"]

MAX_WAIT = 60.0
DEFAULT_LAST = 100


def ndjson(events: list[tuple[int, FlowEvent]]) -> bytes:
    return b"".join(json.dumps(e.to_json(), separators=(",", ":")).encode() + b"\n"
                    for _, e in events)  # fmt: skip


def _number(query: dict[str, str], name: str, default: float) -> float:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HttpError(400, f"query parameter {name} must be a number, got {raw!r}") from None
    if value < 0:
        raise HttpError(400, f"query parameter {name} must not be negative, got {raw!r}")
    return value


def build_router(agent: Agent) -> Router:
    router = Router()

    async def status(_req: Request, _p: dict[str, str]) -> Response:
        return Response.json(await agent.status())

    async def pod(req: Request, p: dict[str, str]) -> Response:
        query = req.query_params()
        key = f"{p['namespace']}/{p['name']}"
        version = int(_number(query, "version", 0))
        deadline = time.monotonic() + min(_number(query, "wait", 0), MAX_WAIT)
        verdict = agent.pod_verdict(key, version)
        while not verdict.programmed and (left := deadline - time.monotonic()) > 0:
            agent.request_sync()  # its cgroup may have appeared since the last pass
            await agent.wait_synced(min(left, 0.5))
            verdict = agent.pod_verdict(key, version)
        return Response.json(verdict.to_json())

    async def flows(req: Request, _p: dict[str, str]) -> Response:
        query = req.query_params()
        if query.get("follow") in ("1", "true", "yes"):
            after = int(_number(query, "after", agent.flows.seq))
            if after > agent.flows.seq:  # a cursor from before an agent restart: all is new
                after = 0
            timeout = min(_number(query, "timeout", 30), MAX_WAIT)
            events = await agent.flows.wait_after(after, timeout)
        else:
            events = agent.flows.last(int(_number(query, "last", DEFAULT_LAST)))
        seq = events[-1][0] if events else agent.flows.seq
        headers = {"Content-Type": "application/x-ndjson", "X-Hm-Seq": str(seq)}
        return Response(200, headers, ndjson(events))

    router.add("GET", "/v1/status", status)
    router.add("GET", "/v1/pods/{namespace}/{name}", pod)
    router.add("GET", "/v1/flows", flows)
    return router
