"""Two network namespaces with capture and a sidecar proxy each, for the proxy's privileged tests.

Imported by name (pytest puts this directory on sys.path); the benchmark script uses it too::

    hm-ptest-client (10.77.0.1)  ── veth ──  hm-ptest-server (10.77.0.2, .3, .4)
    app (curl, wrk, python)                  httpsvc per address, banner server, echo
    proxy: default/client-0                  proxy: default/web-0 (one "pod", three addresses)

Service VIPs (10.96.0.0/16) are routed onto the veth so a connect() reaches nat OUTPUT, where
capture redirects it to the client proxy. Every name starts with ``hm-ptest-``; :meth:`down`
removes what :meth:`up` made, and killing processes goes by PID only.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netprocs import NetProcesses

from hybridmesh.lab import _sh, capture
from hybridmesh.lab.netns import connect
from hybridmesh.proxy.testing import FakeControlPlane, endpoint, pod_snapshot, service

CLIENT_NS = "hm-ptest-client"
SERVER_NS = "hm-ptest-server"
CLIENT_IP = "10.77.0.1"
SERVER_IPS = ("10.77.0.2", "10.77.0.3", "10.77.0.4")
WEB_VIP, SMTP_VIP, ECHO_VIP, EMPTY_VIP, SLOW_VIP, GRPC_VIP, CLIENT_VIP = (
    "10.96.0.10",
    "10.96.0.11",
    "10.96.0.12",
    "10.96.0.13",
    "10.96.0.14",
    "10.96.0.15",
    "10.96.0.20",
)
WEB_PORT, SMTP_PORT, ECHO_PORT, SLOW_PORT, GRPC_PORT = 8080, 2525, 7007, 8081, 9090
CLIENT_POD, SERVER_POD = "default/client-0", "default/web-0"

BANNER_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(128)
while True:
    c, _ = s.accept()
    c.sendall(b"220 hm-smtp ready\\r\\n")
    c.close()
"""
ECHO_SERVER = """
import asyncio, sys
async def echo(r, w):
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    w.close()
async def main():
    server = await asyncio.start_server(echo, sys.argv[1], int(sys.argv[2]))
    await server.serve_forever()
asyncio.run(main())
"""


H2_APP = """
import asyncio, sys
from hybridmesh.proxy.protocols.http2 import H2Server, RequestHeaders, Data, Trailers
class App(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.conn, self.reqs = t, H2Server(), {}
        t.write(self.conn.data_to_send())
    def data_received(self, data):
        for ev in self.conn.receive_data(data):
            if isinstance(ev, RequestHeaders):
                self.reqs[ev.stream_id] = [ev, 0]
                if ev.end_stream: self.answer(ev.stream_id)
            elif isinstance(ev, Data):
                self.reqs[ev.stream_id][1] += len(ev.data)
                self.conn.acknowledge_received(ev.stream_id, ev.flow_controlled_length)
                if ev.end_stream: self.answer(ev.stream_id)
            elif isinstance(ev, Trailers):
                self.answer(ev.stream_id)
        self.t.write(self.conn.data_to_send())
    def answer(self, sid):
        head, n = self.reqs.pop(sid)
        self.conn.send_response(sid, 200, [(b"content-type", b"application/grpc")])
        self.conn.send_data(sid, b"h2 %s %d" % (head.path, n))
        self.conn.send_trailers(sid, [(b"grpc-status", b"0")])
async def main():
    server = await asyncio.get_running_loop().create_server(App, sys.argv[1], int(sys.argv[2]))
    await server.serve_forever()
asyncio.run(main())
"""


def web_route(retry_codes: Sequence[int] = (), attempts: int = 2) -> dict[str, Any]:
    retry = (
        {"codes": list(retry_codes), "attempts": attempts, "backoffMs": 5} if retry_codes else None
    )
    return {
        "name": "default/web",
        "service": "default/web",
        "port": None,
        "hostnames": [],
        "rules": [
            {
                "matches": [],
                "backends": [],
                "timeouts": {"requestMs": None, "backendRequestMs": None},
                "retry": retry,
            }
        ],
    }


SLOW_ROUTE: dict[str, Any] = {
    "name": "default/slow",
    "service": "default/slow",
    "port": None,
    "hostnames": [],
    "rules": [
        {
            "matches": [],
            "backends": [],
            "timeouts": {"requestMs": 200, "backendRequestMs": None},
            "retry": None,
        }
    ],
}


def services(web_ips: Iterable[str] = SERVER_IPS) -> list[dict[str, Any]]:
    web_eps = [endpoint(f"web-{i}", ip) for i, ip in enumerate(web_ips)]
    first = [endpoint("web-0", SERVER_IPS[0])]
    return [
        service("web", WEB_VIP, [(80, WEB_PORT)], web_eps),
        service("smtp", SMTP_VIP, [(25, SMTP_PORT)], first),
        service("echo", ECHO_VIP, [(7, ECHO_PORT)], first),
        service("empty", EMPTY_VIP, [(80, WEB_PORT)], []),
        service("slow", SLOW_VIP, [(80, SLOW_PORT)], first),
        service("grpc", GRPC_VIP, [(80, GRPC_PORT)], first),
        service(
            "client",
            CLIENT_VIP,
            [(80, 80)],
            [endpoint("client-0", CLIENT_IP)],
            selector={"app": "client"},
        ),
    ]


@dataclass
class MeshNet(NetProcesses):
    """The two namespaces, the fake control plane and the processes the test started."""

    cp: FakeControlPlane | None = None

    # -- network -------------------------------------------------------------------------------
    def up(self) -> None:
        for ns in (CLIENT_NS, SERVER_NS):
            if _sh.netns_exists(ns):
                _sh.ip(None, "netns", "del", ns)
            _sh.ip(None, "netns", "add", ns)
        _sh.ip(
            CLIENT_NS,
            "link",
            "add",
            "hm-ptc0",
            "type",
            "veth",
            "peer",
            "name",
            "hm-pts0",
            "netns",
            SERVER_NS,
        )
        _sh.ip_batch(
            CLIENT_NS,
            [
                "link set lo up",
                f"addr add {CLIENT_IP}/24 dev hm-ptc0",
                "link set hm-ptc0 up",
                "route add default dev hm-ptc0",
            ],
        )
        _sh.ip_batch(
            SERVER_NS,
            [
                "link set lo up",
                *(f"addr add {ip}/24 dev hm-pts0" for ip in SERVER_IPS),
                "link set hm-pts0 up",
                "route add default dev hm-pts0",
            ],
        )
        self.cp = FakeControlPlane(self.tmp / "cp.sock")
        self.cp.start_in_thread()
        self.publish()

    def publish(
        self, routes: Sequence[Mapping[str, Any]] = (), web_ips: Iterable[str] = SERVER_IPS
    ) -> None:
        assert self.cp is not None
        svcs = services(web_ips)
        self.cp.set(
            CLIENT_POD,
            pod_snapshot("client-0", CLIENT_IP, svcs, routes=routes, labels={"app": "client"}),
        )
        self.cp.set(
            SERVER_POD,
            pod_snapshot("web-0", SERVER_IPS[0], svcs, routes=routes, labels={"app": "web"}),
        )

    def capture(self, on: bool) -> None:
        for ns in (CLIENT_NS, SERVER_NS):
            if on:
                capture.apply_capture(ns)
            else:
                capture.remove_capture(ns)

    def down(self) -> None:
        self.stop_all()
        if self.cp is not None:
            self.cp.stop_thread()
        for ns in (CLIENT_NS, SERVER_NS):
            if _sh.netns_exists(ns):
                _sh.ip(None, "netns", "del", ns, check=False)

    # -- processes -----------------------------------------------------------------------------
    def start_backends(self, *, fail_ip: str | None = None) -> None:
        for i, ip in enumerate(SERVER_IPS):
            extra = ["--fail-rate", "0.5"] if ip == fail_ip else []
            self.python(
                f"web-{i}",
                SERVER_NS,
                "-m",
                "hybridmesh.lab.workloads.httpsvc",
                "--host",
                ip,
                "--port",
                str(WEB_PORT),
                "--name",
                "web",
                *extra,
            )
        self.python("smtp", SERVER_NS, "-c", BANNER_SERVER, SERVER_IPS[0], str(SMTP_PORT))
        self.python("echo", SERVER_NS, "-c", ECHO_SERVER, SERVER_IPS[0], str(ECHO_PORT))
        self.python(
            "slow",
            SERVER_NS,
            "-m",
            "hybridmesh.lab.workloads.httpsvc",
            "--host",
            SERVER_IPS[0],
            "--port",
            str(SLOW_PORT),
            "--latency-ms",
            "1000",
        )
        self.python("grpc", SERVER_NS, "-c", H2_APP, SERVER_IPS[0], str(GRPC_PORT))
        for ip, port in [
            *((ip, WEB_PORT) for ip in SERVER_IPS),
            (SERVER_IPS[0], SMTP_PORT),
            (SERVER_IPS[0], ECHO_PORT),
            (SERVER_IPS[0], SLOW_PORT),
            (SERVER_IPS[0], GRPC_PORT),
        ]:
            wait_port(SERVER_NS, ip, port)

    def start_proxies(self, *extra: str) -> None:
        assert self.cp is not None
        for name, ns, pod in (
            ("proxy-client", CLIENT_NS, CLIENT_POD),
            ("proxy-server", SERVER_NS, SERVER_POD),
        ):
            self.python(
                name, ns, "-m", "hybridmesh.proxy", "--pod", pod, "--control", self.cp.path, *extra
            )
        for ns in (CLIENT_NS, SERVER_NS):
            wait_ready(ns)


def wait_port(netns: str, ip: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            connect(netns, ip, port, timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def http_get(
    netns: str, ip: str, port: int, path: str, *, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """A one-shot HTTP/1.1 GET from a raw socket in ``netns`` (Connection: close)."""
    sock = connect(netns, ip, port, timeout=timeout)
    try:
        sock.settimeout(timeout)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


def wait_ready(netns: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_get(netns, "127.0.0.1", 15020, "/ready", timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"proxy in {netns} not ready after {timeout}s")
        time.sleep(0.05)


def raw_socket(netns: str, ip: str, port: int) -> socket.socket:
    return connect(netns, ip, port)


LOAD_SCRIPT = """
import http.client, json, sys, threading
host, port, total, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
counts, lock = {}, threading.Lock()
def run(n):
    c = http.client.HTTPConnection(host, port, timeout=10)
    for _ in range(n):
        try:
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            key = str(r.status)
            if r.getheader("hm-proxy-error"):
                key += ":" + r.getheader("hm-proxy-error")
        except Exception as exc:
            key = type(exc).__name__
            c.close()
            c = http.client.HTTPConnection(host, port, timeout=10)
        with lock:
            counts[key] = counts.get(key, 0) + 1
threads = [threading.Thread(target=run, args=(total // conns,)) for _ in range(conns)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(counts))
"""


def run_load(
    net: MeshNet, total: int, conns: int = 8, ip: str = WEB_VIP, port: int = 80
) -> dict[str, int]:
    """``total`` keep-alive GETs from the client netns; counts by status (or error type)."""
    import json

    out = subprocess.run(
        _sh.in_netns(
            CLIENT_NS, [sys.executable, "-c", LOAD_SCRIPT, ip, str(port), str(total), str(conns)]
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    counts: dict[str, int] = json.loads(out.stdout)
    return counts


def metric(netns: str, name: str, **labels: str) -> float:
    """Sum of a proxy's metric samples (read through its admin port) matching ``labels``."""
    _, _, body = http_get(netns, "127.0.0.1", 15020, "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in key for k, v in labels.items()):
                total += float(value)
    return total
