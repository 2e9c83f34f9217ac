"""The admin endpoint on :15020: ``/ready``, ``/live``, ``/metrics``, ``/config_dump``,
``POST /shutdown``.

The same server serves a single-process proxy and the supervisor of a multi-worker one; what it
reports comes from callbacks (:class:`AdminSource`), so the supervisor can *aggregate* its
workers: ``/metrics`` is the sum of every worker's series (:func:`merge_expositions`: counters,
histogram buckets, counts and sums all add up exactly), ``/ready`` is true when every worker is
ready. One scrape target per pod, as Prometheus and ``hybridmesh stat`` expect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hybridmesh._http import HttpServer, Request, Response, Router

__all__ = ["CONTENT_TYPE_METRICS", "AdminSource", "admin_router", "merge_expositions",
           "start_admin"]

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class AdminSource:
    """Where the admin endpoint gets its answers."""

    ready: Callable[[], Awaitable[bool]]
    metrics: Callable[[], Awaitable[bytes]]
    config_dump: Callable[[], Awaitable[dict[str, Any]]]
    shutdown: Callable[[], None]


def admin_router(source: AdminSource) -> Router:
    router = Router()

    async def ready(_req: Request, _p: dict[str, str]) -> Response:
        if await source.ready():
            return Response.text("ready\n")
        return Response.text(
            "not ready: no snapshot yet, listeners not bound, no certificate yet, or draining\n",
            503,
        )

    async def live(_req: Request, _p: dict[str, str]) -> Response:
        return Response.text("live\n")

    async def metrics(_req: Request, _p: dict[str, str]) -> Response:
        return Response(200, {"Content-Type": CONTENT_TYPE_METRICS}, await source.metrics())

    async def config_dump(_req: Request, _p: dict[str, str]) -> Response:
        body = json.dumps(await source.config_dump(), indent=1, sort_keys=True, default=str)
        return Response(200, {"Content-Type": "application/json"}, body.encode())

    async def shutdown(_req: Request, _p: dict[str, str]) -> Response:
        source.shutdown()
        return Response.text("draining\n")

    router.add("GET", "/ready", ready)
    router.add("GET", "/live", live)
    router.add("GET", "/metrics", metrics)
    router.add("GET", "/config_dump", config_dump)
    router.add("POST", "/shutdown", shutdown)
    return router


async def start_admin(
    source: AdminSource, *, host: str | None = None, port: int = 0, unix_path: str | None = None
) -> tuple[HttpServer, int]:
    """Serve the admin API on TCP ``host:port`` or on ``unix_path``; returns (server, port)."""
    server = HttpServer(admin_router(source))
    if unix_path is not None:
        await server.start_unix(unix_path)
        return server, 0
    return server, await server.start_tcp(host or "0.0.0.0", port)


def merge_expositions(texts: Iterable[bytes]) -> bytes:
    """Sum Prometheus text expositions of identical shape (one per worker) series by series.

    Every worker renders with the same prometheus-client, so a series' text left of its value
    (``name{labels}``) is an exact key; families keep their first ``# HELP``/``# TYPE`` lines
    and the order series first appeared in.
    """
    families: dict[str, tuple[list[str], dict[str, float]]] = {}
    for text in texts:
        current: tuple[list[str], dict[str, float]] | None = None
        for line in text.decode("utf-8").splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                if len(parts) >= 3:
                    name = parts[2]
                    current = families.setdefault(name, ([], {}))
                    if line not in current[0]:
                        current[0].append(line)
                continue
            if not line.strip():
                continue
            key, _, value = line.rpartition(" ")
            if current is None:
                current = families.setdefault("", ([], {}))
            current[1][key] = current[1].get(key, 0.0) + float(value)
    out: list[str] = []
    for headers, series in families.values():
        out += headers
        out += (f"{key} {_number(value)}" for key, value in series.items())
    return ("\n".join(out) + "\n").encode("utf-8") if out else b""


def _number(value: float) -> str:
    """A sample value as Prometheus text writes it (``+Inf``, integers without noise)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
