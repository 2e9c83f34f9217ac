"""The proxy's access log: one JSON object per line, Envoy/Istio field names, opt-in.

Why a writer thread: ``log()`` runs on the proxy's event loop, and the stream may be a pipe to a
slow reader, a full disk or a terminal. ``log()`` therefore only copies the record into a
bounded in-memory queue; a daemon thread serializes the queued records and writes them in
batches (every ``flush_interval_s``, or sooner when the queue passes a high-water mark). A
blocking write stalls that thread, never the loop (the GIL is released during the write). When
the reader falls so far behind that the queue is full, new records are dropped and counted in
``dropped`` rather than letting memory grow or the proxy stall: an access log is diagnostics,
not an audit trail.

Records are mappings whose keys follow ``FIELDS`` (Envoy's default format names, as Istio's JSON
access log uses them); known fields come first in that order, then any extra keys sorted.
``start_time`` may be given as a Unix timestamp (float seconds) and is written as ISO 8601 UTC
with milliseconds; when absent, the time ``log()`` was called is used.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Final

__all__ = ["FIELDS", "AccessLog", "format_record"]

FIELDS: Final = (
    "start_time",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "duration_ms",
    "bytes_received",
    "bytes_sent",
    "upstream_host",
    "upstream_cluster",
    "downstream_remote_address",
    "source_workload",
    "source_namespace",
    "source_principal",
    "destination_workload",
    "destination_namespace",
    "destination_principal",
    "destination_service",
    "route_name",
    "authority",
    "user_agent",
    "request_id",
    "retry_count",
    "grpc_status",
    "policy_decision",
    "policy_name",
    "reporter",
)
_ORDER: Final = {name: i for i, name in enumerate(FIELDS)}
_HIGH_WATER = 1024  # queued records that wake the writer before its interval


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_record(record: Mapping[str, object], logged_at: float) -> str:
    """One JSON line (with its newline) for ``record``; pure, so it is tested directly."""
    fields = dict(record)
    start = fields.get("start_time", logged_at)
    if isinstance(start, int | float) and not isinstance(start, bool):
        fields["start_time"] = _iso(float(start))
    ordered = sorted(fields, key=lambda k: (_ORDER.get(k, len(_ORDER)), k))
    return json.dumps({k: fields[k] for k in ordered}, default=str, separators=(",", ":")) + "\n"


class AccessLog:
    """Opt-in JSON-lines access log; ``AccessLog(None)`` is disabled and costs one branch.

    The stream is the caller's: ``close()`` flushes and stops the writer but leaves it open.
    """

    def __init__(
        self,
        stream: IO[str] | None,
        *,
        flush_interval_s: float = 0.25,
        max_pending: int = 65536,
    ) -> None:
        self.stream = stream
        # False when there is no stream (or once closed): callers can skip building records
        # altogether. An attribute, not a property: the proxy reads it once per request.
        self.enabled = stream is not None
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.dropped = 0
        self.write_errors = 0
        self._queue: deque[tuple[float, dict[str, object]] | threading.Event] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_thread(ref))


    def log(self, record: Mapping[str, object]) -> None:
        """Queue one record; never blocks. Dropped (and counted) when the queue is full."""
        if self.stream is None or self._closed:
            return
        queue = self._queue
        if len(queue) >= self.max_pending:
            self.dropped += 1
            return
        queue.append((time.time(), dict(record)))
        if self._thread is None:
            self._start()
        elif len(queue) == _HIGH_WATER:
            self._wake.set()

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Block until everything logged so far is written; False if ``timeout`` passed first."""
        if self._thread is None or self.stream is None:
            return True
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Write what is queued, then stop the writer thread. Later ``log()`` calls are no-ops."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self.enabled = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- writer thread ---------------------------------------------------------------------
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hm-access-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        lines: list[str] = []
        waiters: list[threading.Event] = []
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, threading.Event):
                self._write(lines)
                lines = []
                waiters.append(item)
            else:
                lines.append(format_record(item[1], item[0]))
        self._write(lines)
        for waiter in waiters:
            waiter.set()

    def _write(self, lines: list[str]) -> None:
        if not lines or self.stream is None:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError):  # closed or broken stream: keep serving, count it
            self.write_errors += len(lines)


def _forget_thread(ref: weakref.ref[AccessLog]) -> None:
    """After fork the writer thread does not exist in the child: start a new one on demand."""
    log = ref()
    if log is not None:
        log._thread = None
        log._wake = threading.Event()
