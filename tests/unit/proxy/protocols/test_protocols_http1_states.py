"""The reader's transition table: scenarios walk every (state, step) pair in it, pairs not in
it are refused as LocalProtocolError, and the limits/error-code tables are sane."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from h1_playbook import drain

from hybridmesh.proxy.protocols import _h1reader
from hybridmesh.proxy.protocols.http1 import (
    TRANSITIONS,
    ErrorCode,
    Event,
    Limits,
    LocalProtocolError,
    ReaderState,
    RequestReader,
    ResponseReader,
    Step,
)


@pytest.fixture
def walked(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[tuple[ReaderState, Step]]]:
    """Record every transition any reader takes while the test runs."""
    seen: set[tuple[ReaderState, Step]] = set()
    original = _h1reader.Reader._advance

    def recording(self: _h1reader.Reader, step: Step) -> None:
        seen.add((self.state, step))
        original(self, step)

    monkeypatch.setattr(_h1reader.Reader, "_advance", recording)
    yield seen


def feed(reader: RequestReader | ResponseReader, *chunks: bytes) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        reader.receive_data(chunk)
        drain(reader, events)
    return events


COMPILED = not (_h1reader.__file__ or "").endswith(".py")
"""mypyc-compiled reader (hybridmesh/native): its methods cannot be wrapped from Python."""


@pytest.mark.skipif(not COMPILED, reason="the in-process walk below runs instead")
def test_scenarios_walk_the_whole_table_in_the_interpreted_reader() -> None:
    """The compiled reader is built from the same source; the walk needs the interpreted one."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "test_scenarios_walk_the_whole_table and not interpreted"],
        env={**os.environ, "HM_NATIVE": "0"}, capture_output=True, text=True, timeout=120,
        check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout, out.stdout


@pytest.mark.skipif(COMPILED, reason="run interpreted by the test above")
def test_scenarios_walk_the_whole_table(walked: set[tuple[ReaderState, Step]]) -> None:
    feed(
        RequestReader(),
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"
        b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"",
    )
    feed(RequestReader(), b"")
    tunnel = RequestReader()
    feed(tunnel, b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n")
    tunnel.switch_protocol()
    refused = RequestReader()
    feed(refused, b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n")
    refused.resume()
    upstream = ResponseReader()
    upstream.expect(b"GET")
    feed(upstream, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nbody", b"")
    assert walked == set(TRANSITIONS)


@pytest.mark.parametrize("state", list(ReaderState))
def test_every_state_is_handled_or_terminal(state: ReaderState) -> None:
    outgoing = {step for (src, step) in TRANSITIONS if src is state}
    terminal = {ReaderState.SWITCHED, ReaderState.CLOSED, ReaderState.ERROR}
    assert bool(outgoing) is (state not in terminal)
    assert all(dst in ReaderState for dst in TRANSITIONS.values())


def test_steps_outside_the_table_are_local_errors() -> None:
    reader = RequestReader()
    with pytest.raises(LocalProtocolError):
        reader.resume()  # only after a CONNECT
    with pytest.raises(LocalProtocolError):
        reader.switch_protocol()
    reader.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    drain(reader, [])
    with pytest.raises(LocalProtocolError):
        reader.switch_protocol()  # a GET does not open a tunnel


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_start_line"):
        Limits(max_head_size=100, max_start_line=100)
    with pytest.raises(ValueError, match="max_headers"):
        Limits(max_headers=0)


def test_error_codes_name_their_status() -> None:
    assert len({c.value for c in ErrorCode}) == len(ErrorCode)
    assert ErrorCode.REQUEST_LINE_TOO_LONG.request_status == 414
    assert ErrorCode.HEADER_SECTION_TOO_LARGE.request_status == 431
    assert ErrorCode.TOO_MANY_HEADERS.request_status == 431
    assert ErrorCode.UNSUPPORTED_VERSION.request_status == 505
    assert ErrorCode.CONTENT_LENGTH_AND_TRANSFER_ENCODING.request_status == 400
