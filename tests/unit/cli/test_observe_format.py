"""observe's one-line format (golden lines) and its JSON lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from hybridmesh.agent.datapath import FlowEvent
from hybridmesh.cli._observe_format import format_bytes, format_json, format_line, format_time

T = int(datetime(2026, 11, 21, 10, 0, 1, 123456, tzinfo=UTC).timestamp()) * 10**9 + 123_456_789


def flow(**kw: object) -> FlowEvent:
    base: dict[str, object] = dict(time_ns=T, kind="open", src_ip="10.0.0.1", src_port=43210,
                                   dst_ip="10.0.0.2", dst_port=5432, src_pod="shop/web-0",
                                   dst_pod="shop/db-0")  # fmt: skip
    return FlowEvent(**{**base, **kw})  # type: ignore[arg-type]


def test_time() -> None:
    assert format_time(T, UTC) == "Nov 21 10:00:01.123"
    assert format_time(0, UTC) == "Jan 01 00:00:00.000"


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0B"), (999, "999B"), (1000, "1.0kB"), (1234, "1.2kB"), (3_400_000, "3.4MB"),
     (5 * 10**9, "5.0GB")],
)  # fmt: skip
def test_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


GOLDEN = [
    (flow(rtt_us=52),
     "Nov 21 10:00:01.123  shop/web-0:43210 -> shop/db-0:5432  tcp open FORWARDED  rtt 0.05ms"),
    (flow(kind="close", bytes_sent=1234, bytes_received=3_400_000, rtt_us=210, retransmits=1),
     "Nov 21 10:00:01.123  shop/web-0:43210 -> shop/db-0:5432  tcp close FORWARDED  "
     "sent 1.2kB recv 3.4MB rtt 0.21ms retrans 1"),
    (flow(kind="retransmit", retransmits=3, src_pod=None),
     "Nov 21 10:00:01.123  10.0.0.1:43210 -> shop/db-0:5432  tcp retransmit FORWARDED  retrans 3"),
    (flow(kind="drop", verdict="DROPPED", policy="shop/deny-x"),
     "Nov 21 10:00:01.123  shop/web-0:43210 -> shop/db-0:5432  tcp drop "
     "DROPPED (policy shop/deny-x)"),
    (flow(kind="drop", verdict="DROPPED", dst_pod=None),
     "Nov 21 10:00:01.123  shop/web-0:43210 -> 10.0.0.2:5432  tcp drop DROPPED"),
]  # fmt: skip


@pytest.mark.parametrize(("event", "line"), GOLDEN)
def test_line(event: FlowEvent, line: str) -> None:
    assert format_line(event, UTC) == line


def test_json_is_the_agents_record_on_one_line() -> None:
    text = format_json(flow())
    assert "\n" not in text
    assert json.loads(text) == flow().to_json()
