"""Each edge through node proxies is reported once per end, and ``stat`` shows it once per view.

Two in-process node proxies (the loopback bed): a same-node connection has one proxy on its
edge, which must report it as *both* ends (Istio's reporter=source and reporter=destination),
every series alike; a cross-node one is reported by the source's proxy as source and by the
destination's as destination. Their real expositions then go through ``stat``'s pipeline
(parse → delta → merge → build_rows), as the CLI does with two scrapes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from nodeproxy_bed import CLIENT_IP, LOCAL_VIP, OTHER_IP, Bed, policy, roundtrip

from hybridmesh.telemetry.scrape import Samples, delta, merge, parse
from hybridmesh.telemetry.stat_rows import StatRow, View, build_rows

OTHER_ID = "spiffe://cluster.local/ns/default/sa/other"
NODES = ("n1", "n2")
# the bed's pods as the lab API lists them (what stat's rows are made of)
PODS = [{"namespace": "default", "name": f"{w}-0", "workload": w, "node": n, "ip": ip,
         "placement": "node", "ready": True}
        for w, n, ip in (("client", "n1", CLIENT_IP), ("other", "n1", OTHER_IP),
                         ("local", "n1", "127.0.0.6"), ("web", "n2", "127.0.0.3"))]  # fmt: skip


def _scrape(bed: Bed) -> dict[str, Samples]:
    return {n: parse(bed.proxies[n].ctx.metrics.exposition().decode()) for n in NODES}


def _value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, lbl), v in samples.items()
               if n == name and all(dict(lbl).get(k) == x for k, x in labels.items()))


async def _traffic(bed: Bed) -> tuple[dict[str, Samples], dict[str, Samples], dict[str, Samples]]:
    """(before, while 2 same-node + 3 cross-node connections are open, after they closed);
    other-0 -> local is denied once in between."""
    before = _scrape(bed)
    same = [await bed.connect(dest=(LOCAL_VIP, 80)) for _ in range(2)]
    cross = [await bed.connect() for _ in range(3)]
    for r, w in (*same, *cross):
        assert await roundtrip(r, w, b"12345") == b"12345"
    denied = await bed.connect("default/other-0", OTHER_IP, dest=(LOCAL_VIP, 80))
    assert await roundtrip(*denied) == b""
    during = _scrape(bed)
    for _r, w in (*same, *cross):
        w.close()
    async with asyncio.timeout(5):
        while any(p.ctx.active for p in bed.proxies.values()):  # every relay/stream ended
            await asyncio.sleep(0.02)
    return before, during, _scrape(bed)


def _rows(before: dict[str, Samples], after: dict[str, Samples], view: View
          ) -> dict[str, StatRow]:
    window = merge(delta(before[n], after[n]) for n in NODES)
    current = merge(after[n] for n in NODES)
    scraped = {("nodeproxy", n) for n in NODES}
    rows = build_rows(PODS, window, current, 10.0, scraped=scraped, view=view)
    return {r.name: r for r in rows}


def _figures(row: StatRow) -> tuple[Any, ...]:
    assert row.stats is not None, row
    return (row.stats.requests, row.stats.failures, row.stats.unit, row.tcp_connections)


def test_one_proxy_reports_a_same_node_edge_as_both_ends_and_stat_shows_it_once(
        tmp_path: Path) -> None:
    async def body() -> None:
        bed = Bed(tmp_path)
        await bed.up([policy("deny-other", "DENY", [OTHER_ID], app="local")])
        try:
            before, during, after = await _traffic(bed)
        finally:
            await bed.down()
        n1, n2 = after["n1"], after["n2"]
        local = {"source_workload": "client", "destination_workload": "local"}
        for series in ("tcp_open_total", "tcp_close_total", "tcp_read_bytes_total",
                       "tcp_write_bytes_total", "tcp_connect_total"):
            ends = [_value(n1, series, reporter=r, **local) for r in ("source", "destination")]
            assert ends[0] == ends[1] > 0, (series, ends)  # the same figure, as both ends
        assert _value(n1, "tcp_write_bytes_total", reporter="source", **local) == 2 * 5
        web = {"source_workload": "client", "destination_workload": "web"}
        assert (_value(n1, "tcp_open_total", reporter="source", **web),
                _value(n1, "tcp_open_total", reporter="destination", **web),
                _value(n2, "tcp_open_total", reporter="source", **web),
                _value(n2, "tcp_open_total", reporter="destination", **web)) == (3, 0, 0, 3)

        callee = _rows(before, during, View(from_workload="client"))
        assert {k: _figures(r) for k, r in callee.items()} == {
            "local": (2, 0, "connections", 2), "web": (3, 0, "connections", 3)}
        callers = _rows(before, during, View(to_workload="local"))
        assert {k: _figures(r) for k, r in callers.items()} == {
            "client": (2, 0, "connections", 2), "other": (1, 1, "connections", 0)}
        inbound = _rows(before, during, View())
        assert _figures(inbound["local"]) == (3, 1, "connections", 2)
        assert _figures(inbound["web"]) == (3, 0, "connections", 3)
        assert _figures(inbound["client"]) == (0, 0, "connections", 0)  # idle, still cps
        closed = _rows(before, after, View(from_workload="client"))
        assert [r.tcp_connections for r in closed.values()] == [0, 0]

    asyncio.run(asyncio.wait_for(body(), 30))
