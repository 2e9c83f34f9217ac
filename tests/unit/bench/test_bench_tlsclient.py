"""The tls-handshake client: full handshakes that the server confirmed, failures counted."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridmesh.bench.envoy_certs import BenchCA, write_pod_tls
from hybridmesh.bench.envoy_tls import EnvoyTls, spiffe_id
from hybridmesh.bench.tlsclient import Target, context, handshake_once, main, run


def _svid(ca: BenchCA, where: Path, sa: str) -> EnvoyTls:
    sid = spiffe_id("cluster.local", "ns", sa)
    return write_pod_tls(ca, where / sa, sid, owner_uid=None, permissive=False)


@contextlib.contextmanager
def _mtls_server(server: EnvoyTls) -> Iterator[tuple[int, list[str]]]:
    """A TLS 1.3 server on loopback that requires a client certificate; records the peers'
    URI SANs of the handshakes it completed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(server.cert_chain, server.private_key)
    ctx.load_verify_locations(server.trust_bundle)
    listener = socket.create_server(("127.0.0.1", 0))
    peers: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True) as tls:
                sans: Any = (tls.getpeercert() or {}).get("subjectAltName", ())
                peers.extend(str(v) for k, v in sans if k == "URI")
                tls.recv(1)  # until the client's half-close

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], peers
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        listener.close()
        thread.join(5)


def test_a_valid_client_certificate_completes_full_handshakes(tmp_path: Path) -> None:
    ca = BenchCA()
    server, client = _svid(ca, tmp_path, "http"), _svid(ca, tmp_path, "client")
    with _mtls_server(server) as (port, peers):
        target = Target("127.0.0.1", port, client.cert_chain, client.private_key,
                        client.trust_bundle, mark=None)  # fmt: skip
        ctx = context(target)
        for _ in range(3):
            handshake_once(ctx, target)
    assert peers == [spiffe_id("cluster.local", "ns", "client")] * 3


def test_a_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    ca = BenchCA()
    server, stranger = _svid(ca, tmp_path, "http"), _svid(BenchCA(), tmp_path, "client")
    with _mtls_server(server) as (port, peers):
        target = Target("127.0.0.1", port, stranger.cert_chain, stranger.private_key,
                        server.trust_bundle, mark=None)  # fmt: skip
        with pytest.raises(OSError):  # an alert (SSLError) or the reset after it
            handshake_once(context(target), target)
    assert peers == []


def test_run_counts_the_window_and_failures(tmp_path: Path) -> None:
    ca = BenchCA()
    server, client = _svid(ca, tmp_path, "http"), _svid(ca, tmp_path, "client")
    with _mtls_server(server) as (port, peers):
        good = Target("127.0.0.1", port, client.cert_chain, client.private_key,
                      client.trust_bundle, mark=None)  # fmt: skip
        out = run(good, procs=1, warmup=0.1, seconds=0.4)
    assert out["failures"] == 0
    assert isinstance(out["handshakes"], int) and out["handshakes"] > 0
    assert len(peers) >= out["handshakes"]
    with _mtls_server(server) as (port, _):
        bad = Target(
            "127.0.0.1",
            port,
            client.cert_chain,
            client.private_key,
            str(tmp_path / "http" / "cert.pem"),
            mark=None,
        )  # wrong trust anchor
        out = run(bad, procs=1, warmup=0.0, seconds=0.2)
    assert out["handshakes"] == 0 and isinstance(out["failures"], int) and out["failures"] > 0


def test_cli_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--connect", "nohost", "--cert", "c", "--key", "k", "--ca", "b"]) == 2
    missing = str(tmp_path / "none.pem")
    assert main(["--connect", "127.0.0.1:1", "--cert", missing, "--key", missing,
                 "--ca", missing]) == 2  # fmt: skip
    assert "cannot load the client credentials" in capsys.readouterr().err
