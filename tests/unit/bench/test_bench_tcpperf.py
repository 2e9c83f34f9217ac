"""tcpperf on loopback: echo ping-pong and byte-exact stream acknowledgement."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from hybridmesh.bench.tcpperf import CHUNK, LAST, _Sink, run_rr, run_stream
from hybridmesh.lab.workloads._stats import Histogram


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[tuple[int, int]]:
    rr, stream = _free_port(), _free_port()
    argv = [sys.executable, "-m", "hybridmesh.bench.tcpperf", "serve", "--host", "127.0.0.1",
            "--rr-port", str(rr), "--stream-port", str(stream)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        assert b"tcpperf serving" in proc.stdout.readline()
        yield rr, stream
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM is a clean stop


def test_rr_times_every_transaction_after_the_warmup(server: tuple[int, int]) -> None:
    started = time.monotonic()
    out = run_rr("127.0.0.1", server[0], 64, 0.05, 0.2)
    assert time.monotonic() - started < 2
    assert out["transactions"] > 100 and out["warmup_transactions"] > 0
    hist = Histogram.from_json(out["histogram"])
    assert hist.count == out["transactions"]
    assert 0 < out["rtt_p50_us"] <= out["rtt_p99_us"]
    assert out["tps"] == pytest.approx(out["transactions"] / out["seconds"], rel=0.01)


def test_stream_rate_is_what_the_server_acknowledged(server: tuple[int, int]) -> None:
    out = run_stream("127.0.0.1", server[1], 0.05, 0.2)
    assert out["bytes"] == out["sent_bytes"] > 0  # everything written arrived, counted
    assert out["warmup_bytes"] > 0
    assert out["gbps"] == pytest.approx(out["bytes"] * 8 / out["seconds"] / 1e9, rel=0.01)


def test_cli_prints_one_json_object_and_fails_clearly_without_a_server() -> None:
    port = _free_port()
    argv = [sys.executable, "-m", "hybridmesh.bench.tcpperf", "rr", "--host", "127.0.0.1",
            "--port", str(port), "--warmup", "0", "--duration", "0.1"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert f"127.0.0.1:{port}" in done.stderr and "refused" in done.stderr.lower()


def test_cli_refuses_bad_arguments() -> None:
    argv = [sys.executable, "-m", "hybridmesh.bench.tcpperf", "stream", "--host", "h",
            "--port", "1", "--duration", "0"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "--duration must be > 0" in done.stderr


def test_cli_rr_output_is_json(server: tuple[int, int]) -> None:
    argv = [sys.executable, "-m", "hybridmesh.bench.tcpperf", "rr", "--host", "127.0.0.1",
            "--port", str(server[0]), "--warmup", "0", "--duration", "0.1"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(done.stdout)["transactions"] > 0


class _FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("split", [1, 7, 1000, CHUNK - 1, CHUNK, CHUNK + 3, 3 * CHUNK])
def test_sink_answers_once_the_marked_last_chunk_is_complete(split: int) -> None:
    """The end is in band (no half-close needed), found whatever the read sizes."""
    sink, transport = _Sink(), _FakeTransport()
    sink.connection_made(transport)  # type: ignore[arg-type]
    stream = b"\0" * (3 * CHUNK) + bytes([LAST]) + b"\0" * (CHUNK - 1)
    for i in range(0, len(stream) - 1, split):
        sink.data_received(stream[i : min(i + split, len(stream) - 1)])
    assert transport.written == b""  # one byte of the last chunk still missing
    sink.data_received(stream[-1:])
    assert transport.written == f"{4 * CHUNK}\n".encode() and transport.closed


def test_sink_still_answers_a_client_that_half_closes() -> None:
    sink, transport = _Sink(), _FakeTransport()
    sink.connection_made(transport)  # type: ignore[arg-type]
    sink.data_received(b"\0" * 100)
    assert sink.eof_received() is True
    assert transport.written == b"100\n"
