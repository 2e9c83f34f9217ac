"""httpsvc and loadgen as real processes on loopback: call graph, stats, failures, SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from workload_procs import Proc, Spawner

from hybridmesh.lab.workloads._stats import EdgeStats

HTTPSVC = [sys.executable, "-m", "hybridmesh.lab.workloads.httpsvc"]


def get(url: str, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def wait_until_served(svc: Proc, n: int, timeout: float = 5) -> None:
    """Poll until ``n`` requests (besides these polls, which count themselves) have arrived."""
    deadline = time.monotonic() + timeout
    polls = 0
    while time.monotonic() < deadline:
        polls += 1
        if svc.stats()["served"] - polls >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} requests reached the service within {timeout}s")


def test_chain_driven_by_loadgen_counts_every_edge(spawn: Spawner) -> None:
    b = spawn.httpsvc("--name", "b")
    c = spawn.httpsvc("--name", "c", "--response-size", "10")
    a = spawn.httpsvc("--name", "a", "--call", b.url(), "--call", c.url("/deep"))
    load = spawn.loadgen("--target", a.url(), "--rate", "100", "--json", stats=True)
    time.sleep(2)
    live = load.stats()  # long-lived workload mode: stats while it runs
    assert live["role"] == "loadgen"
    assert live["edges"][f"127.0.0.1:{a.port}"]["requests"] > 100
    rc, out = load.terminate()
    assert rc == 0
    summary = json.loads(out)
    sent = summary["requests"]
    assert 150 <= sent <= 300
    assert summary["errors"] == 0
    assert summary["statuses"] == {"200": sent}
    assert 80 <= summary["achieved_rate"] <= 120

    stats = a.stats()
    assert stats["service"] == "a"
    assert set(stats["edges"]) == {f"127.0.0.1:{b.port}", f"127.0.0.1:{c.port}"}
    for edge in stats["edges"].values():
        parsed = EdgeStats.from_json(edge)
        assert (parsed.requests, parsed.errors, parsed.latency.count) == (sent, 0, sent)
    assert b.stats()["edges"] == {}
    assert b.stats()["served"] >= sent

    status, headers, body = get(a.url())
    doc = json.loads(body)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert [call["status"] for call in doc["calls"]] == [200, 200]
    assert get(c.url())[2] == b"x" * 10


def test_fail_rate_half_gives_about_half_500s(spawn: Spawner) -> None:
    svc = spawn.httpsvc("--fail-rate", "0.5")
    load = spawn.loadgen("--target", svc.url(), "--rate", "400", "--duration", "1", "--json")
    out, _ = load.popen.communicate(timeout=30)
    assert load.popen.returncode == 0
    summary = json.loads(out)
    assert summary["requests"] == 400
    failures = summary["statuses"].get("500", 0)
    assert 140 <= failures <= 260  # binomial(400, 0.5): mean 200, sd 10
    assert summary["errors"] == failures
    assert svc.stats()["injected_failures"] == failures


def test_failed_call_gives_502_naming_it(spawn: Spawner) -> None:
    dead = spawn.httpsvc()
    dead_url = dead.url()
    assert dead.terminate()[0] == 0
    ok = spawn.httpsvc()
    a = spawn.httpsvc("--call", ok.url(), "--call", dead_url, "--call-timeout", "2")
    status, _, body = get(a.url())
    doc = json.loads(body)
    assert status == 502
    assert doc["failed"] == dead_url
    failed = next(call for call in doc["calls"] if call["url"] == dead_url)
    assert failed["status"] is None
    assert "cannot connect" in failed["error"]
    edges = a.stats()["edges"]
    assert edges[f"127.0.0.1:{dead.port}"]["errors"] == 1
    assert edges[f"127.0.0.1:{ok.port}"]["errors"] == 0


def test_sigterm_finishes_in_flight_requests_then_exits_0(spawn: Spawner) -> None:
    slow = spawn.httpsvc("--latency-ms", "1000")
    front = spawn.httpsvc("--call", slow.url())
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(get, front.url()) for _ in range(4)]
        futures += [pool.submit(get, slow.url()) for _ in range(4)]
        wait_until_served(slow, 8)  # every request is now waiting on the 1 s latency
        front.popen.send_signal(15)
        slow.popen.send_signal(15)
        results = [f.result() for f in futures]
    assert [status for status, _, _ in results] == [200] * 8
    assert all(headers.get("connection") == "close" for _, headers, _ in results)
    assert front.popen.wait(10) == 0
    assert slow.popen.wait(10) == 0


def test_pod_identity_from_env(spawn: Spawner) -> None:
    env = {"POD_NAME": "catalog-1", "POD_NAMESPACE": "shop", "POD_IP": "10.1.0.7"}
    stats = spawn.httpsvc(env=env).stats()
    assert (stats["service"], stats["pod"], stats["namespace"], stats["ip"]) == (
        "catalog",
        "catalog-1",
        "shop",
        "10.1.0.7",
    )
    assert stats["role"] == "httpsvc"


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("httpsvc", ["--port", "1", "--fail-rate", "2"], "--fail-rate must be within 0..1"),
        ("httpsvc", ["--port", "1", "--call", "catalog"], "expected an http:// URL"),
        ("loadgen", ["--target", "http://x/", "--rate", "0"], "--rate and --timeout must be > 0"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(module: str, args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", f"hybridmesh.lab.workloads.{module}", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_port_in_use_is_a_clear_error(spawn: Spawner) -> None:
    svc = spawn.httpsvc()
    proc = subprocess.run(
        [*HTTPSVC, "--host", "127.0.0.1", "--port", str(svc.port)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "cannot listen on 127.0.0.1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_loadgen_counts_queueing_from_the_due_time(spawn: Spawner) -> None:
    """One connection to a 100 ms server at 20/s: the server can do 10/s, so requests queue.

    A closed-loop client would report ~100 ms for all of them; the last of 20 requests here is
    due at 0.95 s but answered at ~2 s, and that wait must be in its latency.
    """
    slow = spawn.httpsvc("--latency-ms", "100")
    load = spawn.loadgen(
        "--target", slow.url(), "--rate", "20", "--duration", "1", "--concurrency", "1", "--json"
    )
    out, _ = load.popen.communicate(timeout=30)
    summary = json.loads(out)
    assert summary["requests"] == 20
    assert summary["p99_ms"] > 800
    assert summary["p50_ms"] > 300
    assert 95 <= summary["service_p50_ms"] < 300
    assert summary["send_lag_p99_ms"] > 700
