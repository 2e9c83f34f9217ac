"""How ``hybridmesh observe`` prints a flow: one compact line, Hubble's habit.

    Nov 21 10:00:01.123  shop/web-0:43210 -> shop/db-0:5432  tcp close FORWARDED  sent 1.2kB ...
    Nov 21 10:00:02.456  shop/web-0:43212 -> shop/db-0:5432  tcp drop DROPPED (policy shop/deny)

Pure: the time zone is a parameter (local time by default) so tests are exact.
"""

from __future__ import annotations

import json
from datetime import datetime, tzinfo

from hybridmesh.agent.datapath import FlowEvent

__all__ = ["format_bytes", "format_json", "format_line", "format_time"]


def format_time(time_ns: int, tz: tzinfo | None = None) -> str:
    """``Nov 21 10:00:01.123`` (milliseconds, truncated)."""
    seconds, rest = divmod(time_ns, 10**9)
    stamp = datetime.fromtimestamp(seconds, tz=tz)
    return f"{stamp:%b %d %H:%M:%S}.{rest // 10**6:03d}"


def format_bytes(count: int) -> str:
    """SI units with one decimal above a kilobyte: ``999B``, ``1.2kB``, ``3.4MB``."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return f"{count}B"


def _endpoint(pod: str | None, ip: str, port: int) -> str:
    return f"{pod or ip}:{port}"


def _verdict(event: FlowEvent) -> str:
    if event.verdict == "DROPPED" and event.policy:
        return f"DROPPED (policy {event.policy})"
    return event.verdict


def _details(event: FlowEvent) -> str:
    parts = []
    if event.kind == "close":
        parts += [f"sent {format_bytes(event.bytes_sent)}",
                  f"recv {format_bytes(event.bytes_received)}"]  # fmt: skip
    if event.rtt_us is not None and event.kind in ("open", "close"):
        parts.append(f"rtt {event.rtt_us / 1000:.2f}ms")
    if event.kind in ("close", "retransmit"):
        parts.append(f"retrans {event.retransmits}")
    return " ".join(parts)


def format_line(event: FlowEvent, tz: tzinfo | None = None) -> str:
    src = _endpoint(event.src_pod, event.src_ip, event.src_port)
    dst = _endpoint(event.dst_pod, event.dst_ip, event.dst_port)
    head = f"{format_time(event.time_ns, tz)}  {src} -> {dst}  "
    head += f"{event.protocol.lower()} {event.kind} {_verdict(event)}"
    details = _details(event)
    return f"{head}  {details}" if details else head


def format_json(event: FlowEvent) -> str:
    """One line of NDJSON: the agent's own record, so scripts see one format everywhere."""
    return json.dumps(event.to_json(), separators=(",", ":"))
