"""The sidecar proxy for real: two netns, iptables capture, a proxy in each, real clients.

Client app → (capture) → client proxy :15001 → marked socket → server netns → (capture) →
server proxy :15006 → app. One setup for the module (a few seconds); tests that break things
(killing a backend, SIGTERM) repair them or come last.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from meshnet import (
    CLIENT_NS,
    CLIENT_POD,
    ECHO_VIP,
    EMPTY_VIP,
    GRPC_VIP,
    SERVER_IPS,
    SERVER_NS,
    SLOW_ROUTE,
    SLOW_VIP,
    SMTP_PORT,
    SMTP_VIP,
    WEB_VIP,
    MeshNet,
    http_get,
    metric,
    raw_socket,
    run_load,
    wait_port,
    wait_ready,
    web_route,
)

from hybridmesh.lab import _sh

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshNet]:
    if os.geteuid() != 0:
        pytest.fail("privileged tests need root (network namespaces, iptables)")
    mesh = MeshNet(tmp_path_factory.mktemp("meshnet"))
    try:
        mesh.up()
        mesh.start_backends(fail_ip=SERVER_IPS[1])
        mesh.publish(routes=[web_route([500]), SLOW_ROUTE])
        mesh.capture(True)
        mesh.start_proxies()
        yield mesh
    finally:
        mesh.down()


def curl(*args: str) -> str:
    argv = _sh.in_netns(CLIENT_NS, ["curl", "-sS", "--max-time", "5", *args])
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True).stdout


def test_curl_keep_alive_through_both_proxies(net: MeshNet) -> None:
    before = metric(SERVER_NS, "request_total", reporter="destination",
                    source_workload="client", response_code="200")
    out = curl("-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
               "-w", "%{http_code} %{num_connects}\n",
               f"http://{WEB_VIP}/a", f"http://{WEB_VIP}/b", f"http://{WEB_VIP}/c")
    assert out.splitlines() == ["200 1", "200 0", "200 0"]  # one client connection, reused
    after = metric(SERVER_NS, "request_total", reporter="destination", source_workload="client",
                   response_code="200")
    assert after - before == 3  # the destination proxy saw them, and knew who sent them
    assert metric(CLIENT_NS, "request_total", reporter="source",
                  destination_service="web.default.svc.cluster.local") >= 3


def test_raw_socket_client_and_service_balancing(net: MeshNet) -> None:
    for _ in range(6):
        status, headers, body = http_get(CLIENT_NS, WEB_VIP, 80, "/")
        assert status == 200, body
        assert "hm-proxy-error" not in headers
    assert metric(CLIENT_NS, "request_total", destination_workload="web",
                  response_code="200") >= 6


def banner_ms(ip: str, port: int) -> float:
    t0 = time.perf_counter()
    sock = raw_socket(CLIENT_NS, ip, port)
    try:
        sock.settimeout(5)
        assert sock.recv(100) == b"220 hm-smtp ready\r\n"
    finally:
        sock.close()
    return (time.perf_counter() - t0) * 1000.0


def test_server_speaks_first_through_the_proxies_within_50ms_of_direct(net: MeshNet) -> None:
    proxied = statistics.median(banner_ms(SMTP_VIP, 25) for _ in range(7))
    net.capture(False)
    try:
        direct = statistics.median(banner_ms(SERVER_IPS[0], SMTP_PORT) for _ in range(7))
    finally:
        net.capture(True)
    print(f"banner: proxied {proxied:.1f} ms, direct {direct:.1f} ms")
    assert proxied - direct < 50.0, f"proxied {proxied:.1f} ms vs direct {direct:.1f} ms"
    assert proxied >= 15.0  # the outbound detection window really was waited for


def test_opaque_echo_round_trips_binary_data(net: MeshNet) -> None:
    payload = os.urandom(1 << 20)
    sock = raw_socket(CLIENT_NS, ECHO_VIP, 7)
    received = bytearray()
    try:
        sock.settimeout(10)
        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=send)
        writer.start()
        while chunk := sock.recv(1 << 16):
            received += chunk
        writer.join()
    finally:
        sock.close()
    assert bytes(received) == payload
    assert metric(CLIENT_NS, "tcp_open_total", destination_service="echo.default.svc."
                  "cluster.local") >= 1


def test_grpc_shaped_h2c_through_both_proxies(net: MeshNet) -> None:
    out = curl("--http2-prior-knowledge", "-i", "-H", "content-type: application/grpc",
               "--data-binary", "hello", f"http://{GRPC_VIP}/svc.Echo/Say")
    assert out.startswith("HTTP/2 200")
    assert "h2 /svc.Echo/Say 5" in out and "grpc-status: 0" in out
    assert metric(CLIENT_NS, "request_total", request_protocol="grpc", reporter="source",
                  grpc_response_status="0") >= 1
    assert metric(SERVER_NS, "request_total", request_protocol="grpc",
                  reporter="destination") >= 1


def test_no_endpoints_is_503_with_the_proxy_error_header(net: MeshNet) -> None:
    status, headers, body = http_get(CLIENT_NS, EMPTY_VIP, 80, "/")
    assert status == 503
    assert headers["hm-proxy-error"] == "no-endpoints"
    assert CLIENT_POD.encode() in body and b"empty.default.svc.cluster.local:80" in body


def test_route_timeout_is_504(net: MeshNet) -> None:
    t0 = time.monotonic()
    status, headers, _ = http_get(CLIENT_NS, SLOW_VIP, 80, "/")
    assert status == 504 and headers["hm-proxy-error"] == "timeout"
    assert time.monotonic() - t0 < 0.9  # the backend takes 1 s; the route allows 200 ms


def test_smuggling_attempt_is_400_and_the_backend_receives_nothing(net: MeshNet) -> None:
    before = metric(SERVER_NS, "request_total")
    sock = raw_socket(CLIENT_NS, WEB_VIP, 80)
    try:
        sock.settimeout(5)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 6\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"hm-proxy-error: bad-request" in data and data.count(b"HTTP/1.1 ") == 1
    assert metric(SERVER_NS, "request_total") == before  # nothing reached the other side


def test_retries_hide_a_backend_failing_half_its_requests(net: MeshNet) -> None:
    counts = run_load(net, 2400, conns=8)
    ok = counts.get("200", 0)
    assert ok / sum(counts.values()) >= 0.999, counts
    assert metric(CLIENT_NS, "retry_total", destination_service="web.default.svc."
                  "cluster.local") > 0  # the failing backend was hit and retried


def test_killing_a_backend_mid_run_does_not_crash_the_proxy(net: MeshNet) -> None:
    result: dict[str, int] = {}
    load = threading.Thread(target=lambda: result.update(run_load(net, 3000, conns=8)))
    load.start()
    time.sleep(0.3)
    net.stop("web-2", sig=9)
    load.join(60)
    assert net.procs["proxy-client"].poll() is None
    assert net.procs["proxy-server"].poll() is None
    total = sum(result.values())
    assert total == 3000 and result.get("200", 0) / total > 0.98, result
    wait_ready(CLIENT_NS)
    # restore web-2 for the tests after this one
    net.python("web-2", SERVER_NS, "-m", "hybridmesh.lab.workloads.httpsvc", "--host",
               SERVER_IPS[2], "--port", "8080", "--name", "web")
    net.capture(False)
    try:
        wait_port(SERVER_NS, SERVER_IPS[2], 8080)
    finally:
        net.capture(True)


def test_sigterm_drains_in_flight_requests_then_exits_zero(net: MeshNet, tmp_path: Path) -> None:
    net.publish(routes=[web_route([500])])  # no timeout on slow: its 1 s answer goes through
    time.sleep(0.3)
    result: list[tuple[int, dict[str, str], bytes]] = []
    slow = threading.Thread(target=lambda: result.append(http_get(CLIENT_NS, SLOW_VIP, 80, "/",
                                                                  timeout=10)))
    slow.start()
    time.sleep(0.3)
    proc = net.procs["proxy-client"]
    t0 = time.monotonic()
    os.kill(proc.pid, 15)
    code = proc.wait(15)
    slow.join(5)
    assert code == 0
    assert result and result[0][0] == 200, result  # the in-flight request completed
    assert result[0][1].get("connection") == "close"
    assert time.monotonic() - t0 < 5
    del net.procs["proxy-client"]
    # without the proxy, captured connections are refused: nothing bypasses the mesh
    with pytest.raises(OSError):
        raw_socket(CLIENT_NS, WEB_VIP, 80).close()


def test_workers_share_the_listeners_and_admin_aggregates(net: MeshNet) -> None:
    import json

    if "proxy-client" in net.procs:  # the SIGTERM test normally stopped it already
        net.stop("proxy-client")
    assert net.cp is not None
    net.python("proxy-client", CLIENT_NS, "-m", "hybridmesh.proxy", "--pod", CLIENT_POD,
               "--control", net.cp.path, "--workers", "2")
    wait_ready(CLIENT_NS)
    before = metric(CLIENT_NS, "request_total")
    counts = run_load(net, 400, conns=16)
    assert counts.get("200", 0) == 400, counts
    assert metric(CLIENT_NS, "request_total") - before == 400  # the sum over both workers
    _, _, body = http_get(CLIENT_NS, "127.0.0.1", 15020, "/config_dump")
    workers = json.loads(body)["workers"]
    assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2
    assert all(w["requests"] > 0 for w in workers), [w["requests"] for w in workers]
    proc = net.procs.pop("proxy-client")
    os.kill(proc.pid, 15)
    assert proc.wait(15) == 0
    with pytest.raises(OSError):  # no worker survived its supervisor
        raw_socket(CLIENT_NS, WEB_VIP, 80).close()
