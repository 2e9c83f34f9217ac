"""sockmap under a slow reader: the app↔proxy hop must keep TCP's flow control.

A redirect with BPF_F_INGRESS puts the bytes on the peer's psock queue and uncharges them from
the sender at once, and nothing bounds that queue by the reader's buffer: an app that writes
faster than its proxy forwards (a cross-node bulk stream) piles the whole difference into
kernel memory, until the machine's TCP memory passes ``tcp_mem``'s hard limit and the
redirect fails — ``sendmsg`` returns ENOMEM to the app (issue #5, `sidecar+ebpf`
tcp-stream). These tests stream through an accelerated pair (loopback in one pod: the
app↔sidecar hop) with a reader that drains slowly and check that the writer is held back
(what was written but not yet read stays bounded), that no write fails, and that every byte
arrives in order.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import cgroup2_root
from ebpf_env import TAG
from sockmap_env import Pod, bridged_pods

from hybridmesh.ebpf import bpffs
from hybridmesh.ebpf.sockmap import SockMap

pytestmark = pytest.mark.privileged

MIB = 1 << 20
CHUNK = 64 * 1024
TOTAL = 96 * MIB
# What plain TCP lets a writer get ahead of a reader on loopback is its send buffer plus the
# reader's receive buffer (a few MiB, autotuned); the program allows its own bound on top.
MAX_AHEAD = 24 * MIB
_serial = itertools.count()


@pytest.fixture
def pod() -> Iterator[Pod]:
    with bridged_pods(f"{TAG}-bp{next(_serial)}", cgroup2_root(), count=1) as made:
        yield made[0]


@pytest.fixture
def sm(built: None, pod: Pod) -> Iterator[SockMap]:
    n = next(_serial)
    pin_dir, shared = bpffs.pin_dir(f"{TAG}-bp{n}"), bpffs.pin_dir(f"{TAG}-bp{n}-shared")
    loaded = SockMap.load(pin_dir, shared)
    try:
        loaded.attach(pod.cgroup)
        loaded.set_local_ips([pod.ip])
        yield loaded
    finally:
        loaded.close()
        SockMap.remove(pin_dir)
        bpffs.remove_pin_dir(shared)


def _loopback_pair(pod: Pod) -> tuple[socket.socket, socket.socket]:
    with pod.listen("127.0.0.1", 15001) as listener:
        app = pod.connect("127.0.0.1", 15001)
        listener.settimeout(10)
        proxy, _ = listener.accept()
    return app, proxy


_PERIOD = 251  # a prime: no chunk or page size is a multiple of it
_TAPE = bytes(i * 7 % _PERIOD for i in range(_PERIOD)) * (CHUNK // _PERIOD + 2)


def _pattern(offset: int, size: int) -> bytes:
    """Bytes whose value depends on their position in the stream (a reorder shows)."""
    start = offset % _PERIOD
    return _TAPE[start:start + size]


class _Writer(threading.Thread):
    """Writes TOTAL bytes with blocking sendall, recording progress and any error."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.written = 0
        self.error: BaseException | None = None
        self.blocks = [_pattern(i * CHUNK, CHUNK) for i in range(_PERIOD)]

    def run(self) -> None:
        try:
            for i in range(TOTAL // CHUNK):
                self.sock.sendall(self.blocks[i % _PERIOD])
                self.written += CHUNK
        except BaseException as exc:
            self.error = exc


def _drain_slowly(sock: socket.socket, writer: _Writer) -> tuple[int, int, bool]:
    """Read everything at ~200 MiB/s; (bytes read, most written-but-unread, order kept)."""
    sock.settimeout(20)
    got, ahead, ordered = 0, 0, True
    while got < TOTAL:
        part = sock.recv(CHUNK)
        if not part:
            break
        if part != _pattern(got, len(part)):
            ordered = False
        got += len(part)
        ahead = max(ahead, writer.written - got)
        time.sleep(len(part) / (200 * MIB))
    return got, ahead, ordered


def test_a_slow_reader_holds_the_writer_back(sm: SockMap, pod: Pod) -> None:
    app, proxy = _loopback_pair(pod)
    with app, proxy:
        app.settimeout(30)
        writer = _Writer(app)
        writer.start()
        got, ahead, ordered = _drain_slowly(proxy, writer)
        writer.join(30)
    counters = sm.counters()
    assert counters.admitted == 2  # both ends of the hop were accelerated
    assert counters.redirected_msgs > 0
    assert writer.error is None, f"the app's send failed: {writer.error!r}"
    assert got == TOTAL and ordered
    assert ahead <= MAX_AHEAD, f"the writer got {ahead / MIB:.0f} MiB ahead of the reader"
    assert counters.pass_backlog == 1  # the app's socket went to TCP once, and stayed there


def test_a_request_response_hop_stays_accelerated(sm: SockMap, pod: Pod) -> None:
    """The bound only bites a reader that falls behind: small exchanges keep the fast path."""
    app, proxy = _loopback_pair(pod)
    with app, proxy:
        for i in range(200):
            app.sendall(b"q" * 1000)
            assert proxy.recv(4096) == b"q" * 1000, i
            proxy.sendall(b"a" * 1000)
            assert app.recv(4096) == b"a" * 1000, i
    counters = sm.counters()
    assert counters.redirected_msgs == 400
    assert counters.pass_bytes == 0


def test_an_agent_upgrade_over_older_pins_still_loads(built: None) -> None:
    """The stats map grew a counter (pass_backlog): a pin left by the older object, with the
    smaller value, is replaced instead of failing the load."""
    n = next(_serial)
    pin_dir, shared = bpffs.pin_dir(f"{TAG}-bp{n}"), bpffs.pin_dir(f"{TAG}-bp{n}-shared")
    pin_dir.mkdir(mode=0o700, parents=True)
    try:
        subprocess.run(["bpftool", "map", "create", str(pin_dir / "stats"), "type",
                        "percpu_array", "key", "4", "value", "64", "entries", "1", "name",
                        "stats"], check=True, capture_output=True, timeout=10)  # fmt: skip
        with SockMap.load(pin_dir, shared) as loaded:
            assert loaded.counters().pass_backlog == 0
    finally:
        SockMap.remove(pin_dir)
        bpffs.remove_pin_dir(shared)
