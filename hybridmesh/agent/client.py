"""Talking to node agents: the CLI (synchronous) and the lab daemon (async).

Every agent serves :mod:`hybridmesh.agent.api` on :func:`agent_socket` ``(node)``. Reading
flows (``last`` and the ``follow`` long-poll loop) is ``hybridmesh.cli._observe_client``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hybridmesh import env as hm_env
from hybridmesh._http import HttpClient, HttpClientError
from hybridmesh._http.sync import UnixRequestError, unix_request

__all__ = [
    "AgentUnavailable",
    "agent_socket",
    "agents_dir",
    "known_nodes",
    "pod_programmed",
    "status",
]


class AgentUnavailable(Exception):
    """No agent answers for that node (not running, or no lab)."""


def agents_dir() -> Path:
    return hm_env.STATE_DIR / "agents"


def agent_socket(node: str) -> Path:
    return agents_dir() / f"{node}.sock"


def known_nodes() -> list[str]:
    """Nodes with an agent socket (a running lab has one per node)."""
    try:
        return sorted(p.stem for p in agents_dir().glob("*.sock"))
    except OSError:
        return []


def _get(node: str, path: str, timeout: float) -> tuple[dict[str, str], bytes]:
    try:
        code, headers, body = unix_request(str(agent_socket(node)), "GET", path, timeout=timeout)
    except UnixRequestError as exc:
        raise AgentUnavailable(f"agent of node {node}: {exc}") from None
    if code != 200:
        raise AgentUnavailable(f"agent of node {node} answered {code} to {path}: "
                               f"{body.decode(errors='replace').strip()}")  # fmt: skip
    return headers, body


def status(node: str, timeout: float = 10.0) -> dict[str, Any]:
    _, body = _get(node, "/v1/status", timeout)
    data: dict[str, Any] = json.loads(body)
    return data


async def pod_programmed(
    node: str, pod_key: str, version: int = 0, wait: float = 10.0
) -> dict[str, Any]:
    """Ask (async) whether the node's agent has programmed ``ns/name``; waits up to ``wait``.

    Raises :class:`AgentUnavailable` if the agent does not answer.
    """
    client = HttpClient(unix_path=str(agent_socket(node)))
    try:
        resp = await client.request(
            "GET", f"/v1/pods/{pod_key}?version={version}&wait={wait:g}", timeout=wait + 5
        )
    except (HttpClientError, OSError) as exc:
        raise AgentUnavailable(f"agent of node {node}: {exc}") from None
    finally:
        await client.close()
    if resp.status != 200:
        raise AgentUnavailable(f"agent of node {node} answered {resp.status}")
    data: dict[str, Any] = resp.json_body()
    return data
