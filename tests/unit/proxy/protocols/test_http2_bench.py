"""Throughput of an H2Client↔H2Server pair in memory: request + response round trips per
second with 1 KiB bodies, every byte crossing both cores and acknowledged as the proxy
would. This bounds the proxy's HTTP/2 throughput per core (h2 is pure Python).

Run ``python tests/unit/proxy/protocols/test_http2_bench.py [--seconds S] [--profile]``
for the figures; the test only guards against a pathological slowdown (e.g. something
quadratic in the number of streams served on one connection).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import h2.config
import h2.connection
import h2.events

from hybridmesh.proxy.protocols.http2 import Data, H2Client, H2Server, RequestHeaders

BODY = b"x" * 1024
REQUEST_FIELDS = [
    (b"user-agent", b"hm-bench/1"),
    (b"accept", b"application/json"),
    (b"content-type", b"application/octet-stream"),
    (b"content-length", b"1024"),
]
RESPONSE_FIELDS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"1024")]


def connected() -> tuple[H2Client, H2Server]:
    client, server = H2Client(), H2Server()
    for _ in range(3):
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    return client, server


def round_trips(client: H2Client, server: H2Server, n: int, *, concurrency: int = 1) -> None:
    """``n`` POSTs with 1 KiB bodies answered by 1 KiB responses, ``concurrency`` at a time
    (one write per side per batch, as a busy proxy coalesces)."""
    for batch in range(n // concurrency):
        for i in range(concurrency):
            sid = client.send_request(b"POST", b"http", b"svc.ns.svc:8080",
                                      b"/api/v1/items/%d" % (batch * concurrency + i),
                                      headers=REQUEST_FIELDS)
            client.send_data(sid, BODY, end_stream=True)
        for ev in server.receive_data(client.data_to_send()):
            if type(ev) is RequestHeaders:
                server.send_response(ev.stream_id, 200, RESPONSE_FIELDS)
            elif type(ev) is Data:
                server.acknowledge_received(ev.stream_id, ev.flow_controlled_length)
                server.send_data(ev.stream_id, BODY, end_stream=True)
        for ev in client.receive_data(server.data_to_send()):
            if type(ev) is Data:
                client.acknowledge_received(ev.stream_id, ev.flow_controlled_length)
        server.receive_data(client.data_to_send())


def bare_h2_round_trips(n: int) -> float:
    """The same exchange on bare h2 connections (default config, no guards, no events of
    ours): the floor this wrapper is measured against. Returns round trips per second."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding=None))
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    for _ in range(2):
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    request = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"svc.ns.svc:8080"),
               (b":path", b"/api/v1/items/0"), *REQUEST_FIELDS]
    response = [(b":status", b"200"), *RESPONSE_FIELDS]
    start = time.perf_counter()
    for i in range(n):
        sid = client.get_next_available_stream_id()
        request[3] = (b":path", b"/api/v1/items/%d" % i)
        client.send_headers(sid, request)
        client.send_data(sid, BODY, end_stream=True)
        for ev in server.receive_data(client.data_to_send()):
            if isinstance(ev, h2.events.DataReceived):
                server.acknowledge_received_data(ev.flow_controlled_length, sid)
        server.send_headers(sid, response)
        server.send_data(sid, BODY, end_stream=True)
        for ev in client.receive_data(server.data_to_send()):
            if isinstance(ev, h2.events.DataReceived):
                client.acknowledge_received_data(ev.flow_controlled_length, sid)
        server.receive_data(client.data_to_send())
    return n / (time.perf_counter() - start)


def rate(seconds: float, concurrency: int) -> float:
    client, server = connected()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        round_trips(client, server, 200, concurrency=concurrency)
        n += 200
    return n / elapsed


def test_round_trips_do_not_slow_down_with_streams_served() -> None:
    client, server = connected()

    def fastest_batch() -> float:  # min of several: robust on a shared machine
        times = []
        for _ in range(4):
            start = time.perf_counter()
            round_trips(client, server, 100)
            times.append(time.perf_counter() - start)
        return min(times)

    first = fastest_batch()
    round_trips(client, server, 3000, concurrency=10)
    later = fastest_batch()
    assert client.active_streams == server.active_streams == 0
    assert len(client._conn.streams) <= 10 and len(server._conn.streams) <= 10  # h2 cleans up
    assert later < first * 2.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        profile = cProfile.Profile()
        client, server = connected()
        profile.runcall(round_trips, client, server, 5000)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return
    bare = max(bare_h2_round_trips(3000) for _ in range(3))
    print(f"bare h2          : {bare:8.0f} round trips/s ({1e6 / bare:.0f} µs each)")
    for concurrency in (1, 10):
        best = max(rate(args.seconds, concurrency) for _ in range(3))
        print(f"concurrency {concurrency:3d}: {best:8.0f} round trips/s "
              f"({1e6 / best:.0f} µs each, client + server on one core)")


if __name__ == "__main__":
    main()
