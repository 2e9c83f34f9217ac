"""An H2Client and an H2Server joined in memory (the other test_http2 modules import
:class:`Wire`), and the tests of the join itself: handshake and settings."""

from __future__ import annotations

from collections.abc import Callable

from hybridmesh.proxy.protocols.http2 import (
    Event,
    H2Client,
    H2Limits,
    H2Server,
)


class Wire:
    """Bytes written by one side are fed to the other until both are quiet.

    Events collect per side; ``take_*`` hands them over and starts afresh. ``to_server``
    counts every byte the server was fed, for memory-bound assertions.
    """

    def __init__(self, client: H2Limits | None = None, server: H2Limits | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        kwargs = {} if clock is None else {"clock": clock}
        self.client = H2Client(client, **kwargs)
        self.server = H2Server(server, **kwargs)
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        self.to_server = 0
        self.pump()

    def pump(self) -> None:
        while True:
            up, down = self.client.data_to_send(), self.server.data_to_send()
            if not up and not down:
                return
            if up:
                self.to_server += len(up)
                self.server_events += self.server.receive_data(up)
            if down:
                self.client_events += self.client.receive_data(down)

    def take_server(self) -> list[Event]:
        self.pump()
        events, self.server_events = self.server_events, []
        return events

    def take_client(self) -> list[Event]:
        self.pump()
        events, self.client_events = self.client_events, []
        return events


def test_handshake_exchanges_settings_and_is_then_quiet() -> None:
    wire = Wire(server=H2Limits(max_concurrent_streams=7))
    assert wire.client_events == [] and wire.server_events == []
    assert wire.client.max_concurrent_streams == 7
    assert wire.client.can_open_stream()
    assert wire.client.data_to_send() == b"" and wire.server.data_to_send() == b""


def test_server_preface_comes_first_and_client_preface_is_checked() -> None:
    server = H2Server()
    assert server.data_to_send()[3] == 0x4  # our SETTINGS frame
    client = H2Client()
    assert client.data_to_send().startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
