"""AccessLog: JSON lines in Envoy field order, never blocking the caller on a slow stream."""

from __future__ import annotations

import io
import json
import threading
import time

from hybridmesh.telemetry.access_log import FIELDS, AccessLog, format_record

RECORD = {
    "user_agent": "curl/8",
    "method": "GET",
    "path": "/api",
    "response_code": 200,
    "duration_ms": 1.25,
    "start_time": 1700000000.1234,
    "zz_extra": True,
    "authority": "web.shop",
    "policy_decision": "allow",
}


def test_format_orders_known_fields_then_extras_and_converts_start_time() -> None:
    line = format_record(RECORD, logged_at=0.0)
    assert line.endswith("\n") and line.count("\n") == 1
    data = json.loads(line)
    assert list(data) == [
        "start_time",
        "method",
        "path",
        "response_code",
        "duration_ms",
        "authority",
        "user_agent",
        "policy_decision",
        "zz_extra",
    ]
    assert data["start_time"] == "2023-11-14T22:13:20.123Z"
    assert data["response_code"] == 200


def test_missing_start_time_is_the_logging_time_and_odd_values_become_strings() -> None:
    data = json.loads(format_record({"method": "GET", "peer": object}, logged_at=86400.0))
    assert data["start_time"] == "1970-01-02T00:00:00.000Z"
    assert data["peer"].startswith("<class")


def test_fields_include_the_documented_ones() -> None:
    wanted = {
        "start_time", "method", "path", "protocol", "response_code", "response_flags",
        "duration_ms", "bytes_sent", "bytes_received", "upstream_host", "source_workload",
        "destination_workload", "source_principal", "destination_principal", "route_name",
        "authority", "user_agent", "request_id", "retry_count",
    }  # fmt: skip
    assert wanted <= set(FIELDS)


def test_lines_are_written_in_order_on_flush() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, flush_interval_s=60)
    for i in range(100):
        log.log({"request_id": str(i), "method": "GET"})
    assert log.flush(timeout=5)
    lines = stream.getvalue().splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == [str(i) for i in range(100)]
    log.close()


def test_periodic_flush_without_asking() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, flush_interval_s=0.02)
    log.log({"method": "GET"})
    deadline = time.monotonic() + 5
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert json.loads(stream.getvalue())["method"] == "GET"
    log.close()


class _SlowStream(io.StringIO):
    """A stream whose write blocks until released: a stalled pipe reader."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, s: str) -> int:
        self.entered.set()
        self.release.wait(10)
        return super().write(s)


def test_a_stalled_stream_never_blocks_log_and_overflow_is_counted() -> None:
    stream = _SlowStream()
    log = AccessLog(stream, flush_interval_s=0.001, max_pending=50)
    log.log({"request_id": "first"})
    assert stream.entered.wait(5)  # the writer thread is now stuck in write()
    started = time.perf_counter()
    for i in range(200):
        log.log({"request_id": str(i)})
    assert time.perf_counter() - started < 0.5
    assert log.dropped == 150
    stream.release.set()
    assert log.flush(timeout=5)
    assert len(stream.getvalue().splitlines()) == 51
    log.close()


class _Broken(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError("reader went away")


def test_broken_stream_is_counted_not_raised() -> None:
    log = AccessLog(_Broken())
    log.log({"method": "GET"})
    log.log({"method": "PUT"})
    assert log.flush(timeout=5)
    assert log.write_errors == 2
    log.close()


def test_disabled_and_closed_logs_do_nothing() -> None:
    off = AccessLog(None)
    off.log({"method": "GET"})
    assert off.flush() is True
    assert not off.enabled
    stream = io.StringIO()
    log = AccessLog(stream)
    log.log({"method": "GET"})
    log.close()
    assert not log.enabled
    log.log({"method": "POST"})
    assert len(stream.getvalue().splitlines()) == 1


def test_record_is_copied_at_log_time() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, flush_interval_s=60)
    record: dict[str, object] = {"method": "GET"}
    log.log(record)
    record["method"] = "CHANGED"
    log.close()
    assert json.loads(stream.getvalue())["method"] == "GET"


def test_a_forked_worker_gets_its_own_writer_thread() -> None:
    """Proxy workers are forked: the parent's writer thread does not exist in the child."""
    import os

    read_end, write_end = os.pipe()
    log = AccessLog(os.fdopen(write_end, "w"), flush_interval_s=60)
    log.log({"request_id": "parent"})
    assert log.flush(timeout=5)
    pid = os.fork()
    if pid == 0:  # child: must not hang waiting for a thread that was not forked
        log.log({"request_id": "child"})
        os._exit(0 if log.flush(timeout=5) else 1)
    _, status = os.waitpid(pid, 0)
    log.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert log.stream is not None
    log.stream.close()
    with os.fdopen(read_end) as reader:
        ids = [json.loads(x)["request_id"] for x in reader.read().splitlines()]
    assert ids == ["parent", "child"]
