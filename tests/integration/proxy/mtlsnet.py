"""Two pod namespaces with capture, sidecar proxies with identities, a fake CA: the mTLS bed.

Imported by name (pytest puts this directory on sys.path); the benchmark script uses it too::

    hm-mtls-c (10.78.0.1)  ── veth ──  hm-mtls-s (10.78.0.2)
    client apps                         echo-headers :8080, sink :9099, echo :7007
    proxy default/client-0 (sa client)  proxy default/web-0 (sa web)

The fake control plane (a thread of the test process) is the CA; each proxy gets its pod's
bootstrap token in a file, as the lab does. Proxies run under a small test-only wrapper that
also writes every private key it generates to ``<tmp>/<name>.keys`` so tests can grep logs,
metrics and dumps for it (production code has no such hook). Every name starts with
``hm-`` and carries the test process's PID (two runs on one machine do not collide);
:meth:`down` removes what :meth:`up` made, by PID and by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from netprocs import NetProcesses

from hybridmesh.lab import _sh, capture
from hybridmesh.lab.netns import connect
from hybridmesh.proxy.testing import FakeControlPlane, endpoint, pod_snapshot, service

_RUN = os.getpid() % 100000  # per process: two runs of this module on one machine coexist
CLIENT_NS, SERVER_NS = f"hm-mtls-c{_RUN}", f"hm-mtls-s{_RUN}"
CLIENT_LINK, SERVER_LINK = f"hm-mc{_RUN}", f"hm-ms{_RUN}"
CLIENT_IP, SERVER_IP = "10.78.0.1", "10.78.0.2"
WEB_VIP, SINK_VIP, ECHO_VIP = "10.96.0.10", "10.96.0.11", "10.96.0.12"
WEB_PORT, SINK_PORT, ECHO_PORT = 8080, 9099, 7007
CLIENT_POD, SERVER_POD = "default/client-0", "default/web-0"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/default/sa/web"

HEADERS_APP = """
import asyncio, json, sys
class App(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        while b"\\r\\n\\r\\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\\r\\n\\r\\n")
            lines = head.decode("latin-1").split("\\r\\n")
            fields = [l.split(":", 1) for l in lines[1:] if ":" in l]
            pairs = [[k.strip().lower(), v.strip()] for k, v in fields]
            body = json.dumps({"target": lines[0].split(" ")[1], "headers": pairs}).encode()
            self.t.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\n"
                         b"content-length: %d\\r\\n\\r\\n" % len(body) + body)
async def main():
    s = await asyncio.get_running_loop().create_server(App, sys.argv[1], int(sys.argv[2]))
    await s.serve_forever()
asyncio.run(main())
"""
SINK_APP = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(128)
def serve(c):
    n = 0
    while data := c.recv(65536):
        n += len(data)
    with open(sys.argv[3], "a") as f:
        f.write(f"{n}\\n")
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""
ECHO_APP = """
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
PROXY_WRAPPER = """
import sys
import hybridmesh.identity.keygen as keygen
_generate, _out = keygen.generate, sys.argv[1]
async def generate(identity, **options):
    made = await _generate(identity, **options)  # the real child process made the key
    with open(_out, "ab") as f:  # test-only: lets the test grep outputs for the key
        f.write(made.key_pem)
    return made
keygen.generate = generate
from hybridmesh.proxy.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def services(web_sa: str = "web") -> list[dict[str, Any]]:
    server = [endpoint("web-0", SERVER_IP, service_account=web_sa)]
    return [
        service("web", WEB_VIP, [(80, WEB_PORT)], server),
        service("sink", SINK_VIP, [(80, SINK_PORT, "tcp")], server),
        service("echo", ECHO_VIP, [(7, ECHO_PORT, "tcp")], server),
        service(
            "client",
            "10.96.0.20",
            [(80, 80)],
            [endpoint("client-0", CLIENT_IP, service_account="client")],
            selector={"app": "client"},
        ),
    ]


@dataclass
class MtlsNet(NetProcesses):
    """The namespaces, the fake CA/control plane and the processes the test started."""

    mode: str = "STRICT"
    cert_ttl: timedelta = timedelta(minutes=2)
    cp: FakeControlPlane | None = None

    def up(self) -> None:
        for ns in (CLIENT_NS, SERVER_NS):
            if _sh.netns_exists(ns):
                _sh.ip(None, "netns", "del", ns)
            _sh.ip(None, "netns", "add", ns)
        _sh.ip(
            CLIENT_NS,
            "link",
            "add",
            CLIENT_LINK,
            "type",
            "veth",
            "peer",
            "name",
            SERVER_LINK,
            "netns",
            SERVER_NS,
        )
        _sh.ip_batch(
            CLIENT_NS,
            [
                "link set lo up",
                f"addr add {CLIENT_IP}/24 dev {CLIENT_LINK}",
                f"link set {CLIENT_LINK} up",
                f"route add default dev {CLIENT_LINK}",
            ],
        )
        _sh.ip_batch(
            SERVER_NS,
            [
                "link set lo up",
                f"addr add {SERVER_IP}/24 dev {SERVER_LINK}",
                f"link set {SERVER_LINK} up",
                f"route add default dev {SERVER_LINK}",
            ],
        )
        self.cp = FakeControlPlane(self.tmp / "cp.sock")
        self.cp.enable_identity(cert_ttl=self.cert_ttl)
        self.cp.start_in_thread()
        self.publish()
        for name, pod in (("client", CLIENT_POD), ("web", SERVER_POD)):
            (self.tmp / f"{name}.token").write_text(self.cp.issue_token(pod))
        for ns in (CLIENT_NS, SERVER_NS):
            capture.apply_capture(ns)

    def publish(self, web_sa: str = "web") -> None:
        assert self.cp is not None
        svcs = services(web_sa)
        self.cp.set(
            CLIENT_POD,
            pod_snapshot(
                "client-0",
                CLIENT_IP,
                svcs,
                mtls_mode=self.mode,
                labels={"app": "client"},
                service_account="client",
            ),
        )
        self.cp.set(
            SERVER_POD,
            pod_snapshot(
                "web-0",
                SERVER_IP,
                svcs,
                mtls_mode=self.mode,
                labels={"app": "web"},
                service_account="web",
            ),
        )

    def down(self) -> None:
        self.stop_all()
        if self.cp is not None:
            self.cp.stop_thread()
        for ns in (CLIENT_NS, SERVER_NS):
            if _sh.netns_exists(ns):
                _sh.ip(None, "netns", "del", ns, check=False)

    # -- processes -----------------------------------------------------------------------------
    def signal(self, name: str, sig: int) -> None:
        os.kill(self.procs[name].pid, sig)

    def sink_records(self) -> list[int]:
        path = self.tmp / "sink.records"
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def start_apps(self) -> None:
        py = sys.executable
        self.spawn("web", SERVER_NS, [py, "-c", HEADERS_APP, SERVER_IP, str(WEB_PORT)])
        self.spawn(
            "sink",
            SERVER_NS,
            [py, "-c", SINK_APP, SERVER_IP, str(SINK_PORT), str(self.tmp / "sink.records")],
        )
        self.spawn("echo", SERVER_NS, [py, "-c", ECHO_APP, SERVER_IP, str(ECHO_PORT)])
        for port in (WEB_PORT, SINK_PORT, ECHO_PORT):
            wait_port(SERVER_NS, SERVER_IP, port, mark=0x539)
        time.sleep(0.2)
        (self.tmp / "sink.records").unlink(missing_ok=True)  # the readiness probe

    def start_proxies(self, *extra: str, identity: bool = True) -> None:
        assert self.cp is not None
        for name, ns, pod, token in (
            ("proxy-client", CLIENT_NS, CLIENT_POD, "client"),
            ("proxy-server", SERVER_NS, SERVER_POD, "web"),
        ):
            args = ["--pod", pod, "--control", self.cp.path, *extra]
            if identity:
                args += ["--token-file", str(self.tmp / f"{token}.token")]
            keys = str(self.tmp / f"{name}.keys")
            self.spawn(name, ns, [sys.executable, "-c", PROXY_WRAPPER, keys, *args])
        for ns in (CLIENT_NS, SERVER_NS):
            wait_ready(ns)
        if identity:
            for ns in (CLIENT_NS, SERVER_NS):
                wait_identity(ns)


def wait_port(
    netns: str, ip: str, port: int, timeout: float = 10.0, mark: int | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            marked_socket(netns, ip, port, mark).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def marked_socket(
    netns: str, ip: str, port: int, mark: int | None = 0x539, timeout: float = 5.0
) -> Any:
    """A socket from ``netns`` that capture lets through (the proxy's mark): plaintext that
    bypasses the local proxy, as an unmeshed workload's would."""
    from hybridmesh.lab.netns import socket_in

    sock = socket_in(netns)
    try:
        if mark is not None:
            sock.setsockopt(1, 36, mark)  # SOL_SOCKET, SO_MARK
        sock.settimeout(timeout)
        sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


def http_get(
    netns: str, ip: str, port: int, path: str, *, headers: str = "", timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    sock = connect(netns, ip, port, timeout=timeout)
    try:
        sock.settimeout(timeout)
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {ip}\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


def admin(netns: str, path: str) -> bytes:
    return http_get(netns, "127.0.0.1", 15020, path)[2]


def config_dump(netns: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(admin(netns, "/config_dump"))
    return data


def metric(netns: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in admin(netns, "/metrics").decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in key for k, v in labels.items()):
                total += float(value)
    return total


def wait_ready(netns: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, IndexError):
            if http_get(netns, "127.0.0.1", 15020, "/ready", timeout=1.0)[0] == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"proxy in {netns} not ready after {timeout}s")
        time.sleep(0.05)


def wait_identity(netns: str, generation: int = 1, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        ident = config_dump(netns).get("identity") or {}
        if ident.get("state") == "valid" and ident.get("generation", 0) >= generation:
            return dict(ident)
        if time.monotonic() > deadline:
            raise TimeoutError(f"proxy in {netns} has no SVID (generation {generation}): {ident}")
        time.sleep(0.05)


LOAD_SCRIPT = """
import http.client, json, sys, threading, time
host, port, seconds, conns = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
counts, lock = {}, threading.Lock()
deadline = time.monotonic() + seconds
def run(fresh):
    c = http.client.HTTPConnection(host, port, timeout=10)
    while time.monotonic() < deadline:
        try:
            c.request("GET", "/load", headers={"Connection": "close"} if fresh else {})
            r = c.getresponse(); r.read()
            err = r.getheader("hm-proxy-error")
            key = str(r.status) + (":" + err if err else "")
        except Exception as exc:
            key = type(exc).__name__
        if fresh or key != "200":
            c.close(); c = http.client.HTTPConnection(host, port, timeout=10)
        with lock:
            counts[key] = counts.get(key, 0) + 1
threads = [threading.Thread(target=run, args=(i % 2 == 1,)) for i in range(conns)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(counts))
"""


def run_load(seconds: float, conns: int = 4, ip: str = WEB_VIP) -> subprocess.Popen[str]:
    """Start GETs for ``seconds`` from the client netns (half keep-alive, half a new
    connection per request); ``.communicate()`` gives the JSON counts."""
    return subprocess.Popen(
        _sh.in_netns(
            CLIENT_NS, [sys.executable, "-c", LOAD_SCRIPT, ip, "80", str(seconds), str(conns)]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
