"""mTLS between two sidecar proxies for real: netns, iptables capture, proxy processes, a CA.

Client app → (capture) → client proxy → TLS 1.3 on the wire → (capture) → server proxy →
app. What is on the wire is read with an AF_PACKET socket on the server's veth (no tcpdump).
The last test (CA outage until expiry) changes certificate lifetimes: it stays last.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from mtlsnet import (
    CLIENT_ID,
    CLIENT_NS,
    ECHO_VIP,
    SERVER_ID,
    SERVER_IP,
    SERVER_LINK,
    SERVER_NS,
    SINK_PORT,
    SINK_VIP,
    WEB_PORT,
    WEB_VIP,
    MtlsNet,
    admin,
    config_dump,
    http_get,
    marked_socket,
    metric,
    run_load,
    wait_identity,
)

from hybridmesh.identity.ca import MeshCA
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.tls import client_context
from hybridmesh.identity.workload import Svid, make_csr, new_key
from hybridmesh.lab.netns import connect, socket_in

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MtlsNet]:
    if os.geteuid() != 0:
        pytest.fail("privileged tests need root (network namespaces, iptables)")
    mesh = MtlsNet(tmp_path_factory.mktemp("mtlsnet"), cert_ttl=timedelta(minutes=2))
    try:
        mesh.up()
        mesh.start_apps()
        mesh.start_proxies()
        yield mesh
    finally:
        mesh.down()


class Sniffer:
    """First payload bytes of each TCP connection to ``port`` seen on a link (AF_PACKET)."""

    def __init__(self, netns: str, ifname: str, port: int) -> None:
        self.sock = socket_in(netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.1)
        self.port = port
        self.first: dict[int, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.sock.recv(65536)
            except TimeoutError:
                continue
            if frame[12:14] != b"\x08\x00" or frame[23] != 6:  # IPv4, TCP
                continue
            ip_len = (frame[14] & 0x0F) * 4
            tcp = frame[14 + ip_len:]
            sport, dport = struct.unpack("!HH", tcp[:4])
            payload = tcp[(tcp[12] >> 4) * 4:]
            total = struct.unpack("!H", frame[16:18])[0] - ip_len - (tcp[12] >> 4) * 4
            payload = payload[:max(total, 0)]
            if dport == self.port and payload and sport not in self.first:
                self.first[sport] = bytes(payload)

    def stop(self) -> dict[int, bytes]:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        return self.first


def test_meshed_traffic_is_tls_on_the_wire_with_verified_principals(net: MtlsNet) -> None:
    sniffer = Sniffer(SERVER_NS, SERVER_LINK, WEB_PORT)
    try:
        before = metric(SERVER_NS, "identity_connections_total",
                        connection_security_policy="mutual_tls", source_principal=CLIENT_ID)
        for i in range(3):  # fresh client connections; the proxies pool one mTLS connection
            status, _, body = http_get(CLIENT_NS, WEB_VIP, 80, f"/wire{i}")
            assert status == 200, body
    finally:
        first = sniffer.stop()
    assert first, "no TCP payload towards the server seen on the wire"
    for payload in first.values():  # TLS record: handshake(0x16), TLS 1.x, ClientHello(0x01)
        assert payload[0] == 0x16 and payload[1] == 0x03 and payload[5] == 0x01, payload[:8]
        assert b"GET /wire" not in payload
    after = metric(SERVER_NS, "identity_connections_total",
                   connection_security_policy="mutual_tls", source_principal=CLIENT_ID,
                   destination_principal=SERVER_ID)
    assert after - before == len(first) >= 1
    assert metric(SERVER_NS, "request_total", reporter="destination", source_principal=CLIENT_ID,
                  destination_principal=SERVER_ID, response_code="200") >= 3
    assert metric(CLIENT_NS, "request_total", reporter="source", destination_principal=SERVER_ID,
                  response_code="200") >= 3


def test_pod_ip_passthrough_is_mtls_except_to_the_peer_proxys_own_ports(net: MtlsNet) -> None:
    before = metric(SERVER_NS, "request_total", reporter="destination",
                    source_principal=CLIENT_ID)
    status, _, body = http_get(CLIENT_NS, SERVER_IP, WEB_PORT, "/by-pod-ip")  # STRICT pod
    assert status == 200, body
    assert metric(SERVER_NS, "request_total", reporter="destination",
                  source_principal=CLIENT_ID) == before + 1  # verified: it came over mTLS
    status, _, body = http_get(CLIENT_NS, SERVER_IP, 15020, "/ready")  # admin: not captured
    assert (status, body) == (200, b"ready\n")


def test_identity_headers_are_overwritten(net: MtlsNet) -> None:
    forged = ("x-hm-peer-identity: spiffe://cluster.local/ns/kube-system/sa/admin\r\n"
              "x-forwarded-client-cert: URI=spiffe://cluster.local/ns/kube-system/sa/admin\r\n")
    status, _, body = http_get(CLIENT_NS, WEB_VIP, 80, "/headers", headers=forged)
    assert status == 200, body
    seen: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        seen.setdefault(name, []).append(value)
    assert seen["x-hm-peer-identity"] == [CLIENT_ID]
    assert len(seen["x-forwarded-client-cert"]) == 1
    assert seen["x-forwarded-client-cert"][0].endswith(f";URI={CLIENT_ID}")
    assert "kube-system" not in body.decode()


def _send_and_read(sock: Any, payload: bytes) -> bytes:
    data = b""
    try:
        sock.sendall(payload)
        while chunk := sock.recv(65536):
            data += chunk
    except (OSError, ssl.SSLError):
        pass
    finally:
        sock.close()
    return data


def test_plaintext_to_a_strict_pod_is_refused_and_the_app_receives_nothing(
        net: MtlsNet) -> None:
    before = len(net.sink_records())
    refused = metric(SERVER_NS, "identity_connections_refused_total", reason="plaintext-strict")
    for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00opaque bytes", b""):
        sock = marked_socket(CLIENT_NS, SERVER_IP, SINK_PORT)  # bypasses the client proxy
        assert _send_and_read(sock, payload) == b""
    time.sleep(0.3)
    assert len(net.sink_records()) == before  # the app was never even connected to
    assert metric(SERVER_NS, "identity_connections_refused_total",
                  reason="plaintext-strict") - refused == 3


def _tls(ca: MeshCA | None, bundle_pem: bytes) -> ssl.SSLContext:
    if ca is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    key = new_key()
    ident = SpiffeId.for_workload(ca.trust_domain, "default", "intruder")
    ctx = client_context(Svid(ca.sign(make_csr(key, ident), ident, timedelta(hours=1)), key,
                              ca.bundle))
    ctx.verify_mode = ssl.CERT_NONE
    del bundle_pem
    return ctx


@pytest.mark.parametrize("who", ["no-client-cert", "other-trust-domain", "other-ca-same-td"])
def test_tls_without_a_valid_mesh_client_certificate_is_refused(net: MtlsNet, who: str) -> None:
    assert net.cp is not None and net.cp.ca is not None
    ca = {"no-client-cert": None, "other-trust-domain": MeshCA.create_root("evil.example"),
          "other-ca-same-td": MeshCA.create_root("cluster.local")}[who]
    before = len(net.sink_records())
    failed = metric(SERVER_NS, "identity_connections_refused_total", reason="handshake")
    raw = marked_socket(CLIENT_NS, SERVER_IP, SINK_PORT)
    try:
        tls = _tls(ca, net.cp.ca.bundle_pem).wrap_socket(raw)
    except (ssl.SSLError, OSError):
        raw.close()
    else:
        assert _send_and_read(tls, b"secret payload") == b""
    time.sleep(0.3)
    assert len(net.sink_records()) == before
    assert metric(SERVER_NS, "identity_connections_refused_total", reason="handshake") \
        == failed + 1


def test_opaque_tcp_between_meshed_pods_is_mtls(net: MtlsNet) -> None:
    payload = os.urandom(256 * 1024)
    sock = connect(CLIENT_NS, ECHO_VIP, 7)
    got = b""
    try:
        sock.settimeout(10)
        sock.sendall(payload)
        while len(got) < len(payload):
            got += sock.recv(65536)
    finally:
        sock.close()
    assert got == payload
    before = len(net.sink_records())
    sock = connect(CLIENT_NS, SINK_VIP, 80)
    sock.sendall(b"x" * 1000)
    time.sleep(0.3)  # (a client closing before the proxy's upstream exists loses its bytes:
    sock.close()     # the relay's behaviour, plaintext or not; the mTLS handshake widens it)
    deadline = time.monotonic() + 5
    while len(net.sink_records()) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert net.sink_records()[-1] == 1000  # relayed, decrypted, to the app


def test_secure_naming_rejects_a_server_with_the_wrong_identity(net: MtlsNet) -> None:
    assert http_get(CLIENT_NS, WEB_VIP, 80, "/before")[0] == 200  # a verified pooled conn
    net.publish(web_sa="payments")  # the snapshot now says web-0 must be "payments"
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until the client proxy has the new snapshot
            status, headers, body = http_get(CLIENT_NS, WEB_VIP, 80, "/naming")
            if status != 200:
                break
            time.sleep(0.05)
        assert status == 502 and headers["hm-proxy-error"] == "connect-peer-auth", body
        assert b"spiffe://cluster.local/ns/default/sa/payments" in body
        assert f"peer is {SERVER_ID}".encode() in body
    finally:
        net.publish()
    deadline = time.monotonic() + 5
    while http_get(CLIENT_NS, WEB_VIP, 80, "/after")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_rotation_under_load_drops_no_request(net: MtlsNet) -> None:
    serials = {ns: wait_identity(ns)["svid"]["serial"] for ns in (CLIENT_NS, SERVER_NS)}
    gens = {ns: wait_identity(ns)["generation"] for ns in (CLIENT_NS, SERVER_NS)}
    load = run_load(6.0, conns=6)
    for _ in range(3):  # forced early renewals while requests flow (SIGUSR1: the test hook)
        time.sleep(1.5)
        net.signal("proxy-client", signal.SIGUSR1)
        net.signal("proxy-server", signal.SIGUSR1)
    out, err = load.communicate(timeout=60)
    counts = json.loads(out)
    assert set(counts) == {"200"}, (counts, err)
    assert sum(counts.values()) > 300, counts
    for ns in (CLIENT_NS, SERVER_NS):
        ident = wait_identity(ns, generation=gens[ns] + 3)
        assert ident["svid"]["serial"] != serials[ns]
        assert ident["failures"] == 0
    print(f"rotation under load: {counts} ({sum(counts.values()) / 6.0:.0f} req/s), "
          f"3 forced renewals per proxy")


def test_private_keys_appear_in_no_log_metric_or_dump(net: MtlsNet) -> None:
    outputs = []
    for ns, name in ((CLIENT_NS, "proxy-client"), (SERVER_NS, "proxy-server")):
        outputs += [admin(ns, "/metrics").decode(), admin(ns, "/config_dump").decode(),
                    net.log(name)]
    bodies = []
    for name in ("proxy-client", "proxy-server"):
        pems = (net.tmp / f"{name}.keys").read_text()
        assert pems.count("BEGIN PRIVATE KEY") >= 1
        for block in pems.split("-----END PRIVATE KEY-----")[:-1]:
            lines = block.split("-----BEGIN PRIVATE KEY-----")[1].split()
            bodies += lines
    assert bodies
    for text in outputs:
        flat = text.replace("\n", "").replace("\\n", "")
        assert "PRIVATE KEY" not in text
        for line in bodies:
            assert line[:32] not in flat


def test_proxies_never_load_cryptography(net: MtlsNet) -> None:
    """Keys and CSRs are made by the keygen child: the long-lived proxy maps no
    `cryptography` (~10 MB of RSS), yet holds a key (issue #3's RSS budget)."""
    for ns, name in ((CLIENT_NS, "proxy-client"), (SERVER_NS, "proxy-server")):
        assert wait_identity(ns)["state"] == "valid"
        maps = Path(f"/proc/{net.procs[name].pid}/maps").read_text()
        assert "/cryptography/" not in maps and "_cffi_backend" not in maps, name


def test_ca_outage_keeps_serving_until_expiry_then_fails_closed(net: MtlsNet) -> None:
    cp = net.cp
    assert cp is not None
    cp.cert_ttl = timedelta(seconds=10)
    for name in ("proxy-client", "proxy-server"):
        net.signal(name, signal.SIGUSR1)
    gens = {ns: config_dump(ns)["identity"]["generation"] for ns in (CLIENT_NS, SERVER_NS)}
    for ns in (CLIENT_NS, SERVER_NS):
        wait_identity(ns, generation=gens[ns] + 1)
    cp.ca_available = False
    expiries = {ns: metric(ns, "identity_cert_expiry_timestamp_seconds")
                for ns in (CLIENT_NS, SERVER_NS)}
    expiry = min(expiries.values())
    try:
        served = 0
        while time.time() < expiry - 1.5:
            status, _, body = http_get(CLIENT_NS, WEB_VIP, 80, "/outage")
            assert status == 200, (body, config_dump(CLIENT_NS)["identity"])
            served += 1
            time.sleep(0.2)
        assert served >= 3
        assert metric(CLIENT_NS, "identity_renewals_total", result="failure") >= 1
        time.sleep(max(expiries[CLIENT_NS] - time.time(), 0) + 0.5)  # the client's own
        status, headers, body = http_get(CLIENT_NS, WEB_VIP, 80, "/expired")
        assert status == 503 and headers["hm-proxy-error"] == "no-identity", body
        assert config_dump(CLIENT_NS)["identity"]["state"] == "expired"
        assert metric(CLIENT_NS, "identity_cert_expiry_timestamp_seconds") == 0
    finally:
        cp.cert_ttl = timedelta(minutes=2)
        cp.ca_available = True
    for ns in (CLIENT_NS, SERVER_NS):
        wait_identity(ns, generation=gens[ns] + 2)
    assert http_get(CLIENT_NS, WEB_VIP, 80, "/recovered")[0] == 200

