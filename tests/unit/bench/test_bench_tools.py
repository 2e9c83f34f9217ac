"""Load tool command lines and output parsers."""

from __future__ import annotations

import pytest

from hybridmesh.bench.tools import (
    ToolOutputError,
    grpc_frame,
    grpc_h2load_argv,
    h2load_argv,
    last_json,
    loadgen_argv,
    parse_duration_s,
    parse_h2load_log,
    parse_h2load_summary,
    parse_wrk,
    tcpperf_argv,
    wrk_argv,
)

WRK = """Running 2s test @ http://http/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   487.33us  114.22us   2.06ms   80.00%
    Req/Sec    32.11k     1.50k   34.03k    70.00%
  Latency Distribution
     50%  471.00us
     75%  528.00us
     90%  595.00us
     99%    1.93ms
  64005 requests in 2.00s, 72.98MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  31960.21
Transfer/sec:     36.44MB
"""


def test_wrk_report_is_parsed_with_percentiles_in_ms_and_errors_summed() -> None:
    r = parse_wrk(WRK)
    assert r.requests == 64005 and r.seconds == 2.0
    assert r.rps == 31960.21
    assert r.p50_ms == pytest.approx(0.471)
    assert r.p99_ms == pytest.approx(1.93)
    assert r.errors == 5 + 2 + 1


def test_wrk_without_errors_lines_has_zero_errors() -> None:
    clean = "\n".join(
        line for line in WRK.splitlines() if "errors" not in line and "Non-2xx" not in line
    )
    assert parse_wrk(clean).errors == 0


def test_a_failed_wrk_is_a_clear_error() -> None:
    with pytest.raises(ToolOutputError, match="not a wrk report"):
        parse_wrk("unable to connect to http:80 Connection refused\n")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("471.00us", 471e-6), ("0.93ms", 0.93e-3), ("2.00s", 2.0), ("1.50m", 90.0), (" 3s ", 3.0)],
)
def test_wrk_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


def test_a_non_duration_is_refused() -> None:
    with pytest.raises(ToolOutputError):
        parse_duration_s("fast")


def test_last_json_skips_log_lines_and_broken_json() -> None:
    text = 'loadgen stats on 127.0.0.1:19090\n{"p50_ms": 1}\n{"p50_ms": 2}\n{broken\nbye\n'
    assert last_json(text) == {"p50_ms": 2}
    with pytest.raises(ToolOutputError, match="no JSON result"):
        last_json("Traceback (most recent call last):\n  boom\n")


def test_h2load_log_lines_become_a_histogram_and_failures_are_counted() -> None:
    lines = ["1795264945673715\t200\t83", "1795264945673716\t200\t151", "x y", "1\t503\t1000", ""]
    hist, failed = parse_h2load_log(lines)
    assert hist.count == 3 and failed == 1
    assert hist.percentile(100) == pytest.approx(1000, rel=0.01)  # histogram resolution


def test_h2load_rate_is_spread_over_clients_and_durations_are_in_ms() -> None:
    argv = h2load_argv("http://http/", 4, 1000, 2.5, "/tmp/x.log", warmup=0.5)
    assert argv[:2] == ["h2load", "--h1"]
    assert argv[argv.index("--rps") + 1] == "250"
    assert argv[argv.index("-D") + 1] == "2500ms"
    assert argv[argv.index("--warm-up-time") + 1] == "500ms"
    assert "--warm-up-time" not in h2load_argv("http://h/", 1, 10, 1, "/tmp/l")


def test_command_lines() -> None:
    assert wrk_argv("http://http/", 16, 2.5) == [
        "wrk",
        "-t1",
        "-c16",
        "-d2.5s",
        "--latency",
        "http://http/",
    ]
    lg = loadgen_argv("http://http/", 500, 64, 19090)
    assert lg[1:3] == ["-m", "hybridmesh.lab.workloads.loadgen"]
    assert lg[lg.index("--rate") + 1] == "500" and "--json" in lg
    assert lg[lg.index("--stats-host") + 1] == "127.0.0.1"
    tp = tcpperf_argv("rr", "tcp", 5001, 0.5, 2)
    assert tp[3:] == ["rr", "--host", "tcp", "--port", "5001", "--warmup", "0.5", "--duration", "2"]


H2LOAD_GRPC = """\
starting benchmark...
Application protocol: h2c
finished in 2.50s, 5361.50 req/s, 659.25KB/s
requests: 10723 total, 10723 started, 10720 done, 10700 succeeded, 15 failed, 3 errored, 2 timeout
status codes: 10705 2xx, 0 3xx, 0 4xx, 15 5xx
"""


def test_h2load_summary_counts_failed_errored_and_timed_out_as_failures() -> None:
    s = parse_h2load_summary(H2LOAD_GRPC)
    assert (s.seconds, s.rps, s.requests, s.succeeded) == (2.5, 5361.5, 10720, 10700)
    assert s.failed == 20 and s.protocol == "h2c"


def test_an_h2load_that_never_finished_is_a_clear_error() -> None:
    with pytest.raises(ToolOutputError, match="not an h2load report"):
        parse_h2load_summary("connect to 10.96.0.15:50051 failed\n")


def test_grpc_frames_and_command_line() -> None:
    assert grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
    argv = grpc_h2load_argv("http://grpc:50051/E/U", 4, 16, 2.0, log="l", body="b", warmup=0.5)
    assert argv[:7] == ["h2load", "-c", "4", "-m", "16", "-D", "2000ms"]
    assert "--h1" not in argv and argv[-1] == "http://grpc:50051/E/U"
    assert argv[argv.index("-d") + 1] == "b" and "content-type: application/grpc" in argv
    assert argv[argv.index("--warm-up-time") + 1] == "500ms"
