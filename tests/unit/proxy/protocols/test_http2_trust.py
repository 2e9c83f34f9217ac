"""``trust_peer``: h2's inbound header validation is skipped only where it was asked for."""

from __future__ import annotations

import h2.config
import h2.connection

from hybridmesh.proxy.protocols.http2 import H2Client, ProtocolViolation, ResponseHeaders


def _answer_with(fields: list[tuple[bytes, bytes]], *, trusted: bool) -> list[object]:
    """An H2Client's events for a response head a lax server sends verbatim."""
    client = H2Client()
    if trusted:
        client.trust_peer()
    server = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False))
    server.initiate_connection()
    sid = client.send_request(b"GET", b"http", b"web", b"/", end_stream=True)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.send_headers(sid, [(b":status", b"200"), *fields], end_stream=True)
    return client.receive_data(server.data_to_send())


def test_an_untrusted_peer_still_gets_h2s_validation() -> None:
    events = _answer_with([(b"X-Upper", b"1")], trusted=False)
    assert any(isinstance(ev, ProtocolViolation) for ev in events), events


def test_a_trusted_mesh_peer_skips_it() -> None:
    events = _answer_with([(b"x-ok", b"1")], trusted=True)
    assert events[0] == ResponseHeaders(1, 200, ((b"x-ok", b"1"),), True)
    lax = _answer_with([(b"X-Upper", b"1")], trusted=True)
    assert isinstance(lax[0], ResponseHeaders)  # our own checks run where it is forwarded
