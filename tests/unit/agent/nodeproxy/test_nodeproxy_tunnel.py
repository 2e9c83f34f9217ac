"""The tunnel protocol, sans-IO: CONNECT heads, answers, refusals, bytes both ways."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridmesh.agent.nodeproxy.tunnel import (
    TUNNEL_LIMITS,
    TunnelRequestError,
    answer,
    open_stream,
    parse_authority,
    refusal_reason,
    refuse,
)
from hybridmesh.proxy.protocols.http2 import (
    Data,
    H2Client,
    H2Server,
    RequestHeaders,
    ResponseHeaders,
)


def pump(a: Any, b: Any) -> list[Any]:
    """Move bytes a -> b; returns b's events."""
    events: list[Any] = b.receive_data(a.data_to_send())
    return events


def pair() -> tuple[H2Client, H2Server]:
    client, server = H2Client(TUNNEL_LIMITS), H2Server(TUNNEL_LIMITS)
    pump(client, server)
    pump(server, client)
    return client, server


def test_connect_carries_the_pod_address_and_bytes_both_ways() -> None:
    client, server = pair()
    sid = open_stream(client, ("10.244.2.7", 8080), "shop/web-0")
    [head] = pump(client, server)
    assert isinstance(head, RequestHeaders)
    assert (head.method, head.authority, head.path) == (b"CONNECT", b"10.244.2.7:8080", b"")
    assert parse_authority(head.authority) == ("10.244.2.7", 8080)
    assert (b"hm-source-pod", b"shop/web-0") in head.headers
    answer(server, sid)
    [resp] = [e for e in pump(server, client) if isinstance(e, ResponseHeaders)]
    assert refusal_reason(resp) is None
    client.send_data(sid, b"ping")
    [data] = [e for e in pump(client, server) if isinstance(e, Data)]
    assert data.data == b"ping"
    server.send_data(sid, b"pong", end_stream=True)
    events = pump(server, client)
    assert [e.data for e in events if isinstance(e, Data)] == [b"pong"]
    assert any(isinstance(e, Data) and e.end_stream for e in events)


@pytest.mark.parametrize(("reason", "status"), [("policy", 403), ("not-local", 404),
                                                ("stream-limit", 429), ("draining", 503)])
def test_refusal_has_status_and_reason(reason: str, status: int) -> None:
    client, server = pair()
    sid = open_stream(client, ("10.0.0.1", 80), "a/b-0")
    pump(client, server)
    refuse(server, sid, reason)
    [resp] = [e for e in pump(server, client) if isinstance(e, ResponseHeaders)]
    assert resp.status == status and resp.end_stream
    assert refusal_reason(resp) == reason


def test_many_streams_share_one_connection() -> None:
    client, server = pair()
    sids = [open_stream(client, ("10.0.0.1", 1000 + i), "a/b-0") for i in range(300)]
    heads = [e for e in pump(client, server) if isinstance(e, RequestHeaders)]
    assert len(heads) == 300 == len(set(sids))


@pytest.mark.parametrize("bad", [b"", b"10.0.0.1", b"host:80", b"10.0.0.1:0", b"10.0.0.1:65536",
                                 b"10.0.0.1:-1", b"[::1]:80", b"10.0.0.1:80:80", b"\xff:1",
                                 b"10.0.0.256:1", b"10.0.0.1: 80"])
def test_bad_authorities_are_typed_errors(bad: bytes) -> None:
    with pytest.raises(TunnelRequestError) as info:
        parse_authority(bad)
    assert info.value.reason == "bad-request"


@given(st.binary(max_size=40))
def test_parse_authority_is_total(raw: bytes) -> None:
    try:
        ip, port = parse_authority(raw)
    except TunnelRequestError:
        return
    assert 0 < port < 65536 and raw.decode().endswith(f":{port}") and ip.count(".") == 3
