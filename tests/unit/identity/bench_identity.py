"""Micro-benchmarks for the identity core (not collected by pytest).

    .venv/bin/python tests/unit/identity/bench_identity.py

Prints: CA sign latency, proxy key+CSR cost, peer validation cost, context build cost
(rotation), handshake latency over loopback TCP (server in a child process pinned to
CPU 0, client pinned to CPU 1), and handshakes/s with *both* ends on one core (memory
BIOs, one thread: the full CPU cost of a mesh mTLS handshake incl. both check_peer calls).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import ssl
import time
from collections.abc import Callable
from datetime import timedelta

from hybridmesh.identity.ca import MeshCA
from hybridmesh.identity.spiffe import SpiffeId
from hybridmesh.identity.tls import check_peer, client_context, server_context
from hybridmesh.identity.workload import Svid, make_csr, new_key, validate_peer_certificate

TD = "cluster.local"
SERVER = SpiffeId.for_workload(TD, "shop", "api")
CLIENT = SpiffeId.for_workload(TD, "shop", "web")


def timeit(label: str, fn: Callable[[], object], n: int) -> None:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    print(f"{label:<44} p50 {p50 * 1e6:8.0f} µs   p99 {p99 * 1e6:8.0f} µs   (n={n})")


def issue(ca: MeshCA, identity: SpiffeId) -> Svid:
    key = new_key()
    return Svid(ca.sign(make_csr(key, identity), identity, timedelta(hours=1)), key, ca.bundle)


def pump_handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """One full handshake through memory BIOs, then both identity checks."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    while not (done["c"] and done["s"]):
        for name, obj in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    # TLS 1.3: the server finishes verifying the client's certificate when it reads
    # the client's Finished; one application byte each way completes both sides.
    client.write(b"x")
    s_in.write(c_out.read())
    server.read(1)
    check_peer(server, None)
    check_peer(client, SERVER)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (the child is not waited for yet)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(ctx: ssl.SSLContext, sock: socket.socket) -> None:
    os.sched_setaffinity(0, {0})
    while True:
        conn, _ = sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                check_peer(tls, None)
                tls.sendall(b"!")
        except (OSError, ValueError):
            pass


def main() -> None:
    ca = MeshCA.create_root(TD)
    key = new_key()
    csr = make_csr(key, CLIENT)
    timeit("CA sign (CSR verify + build + ECDSA sign)", lambda: ca.sign(csr, CLIENT,
                                                                          timedelta(hours=1)), 500)
    timeit("proxy: new_key + make_csr", lambda: make_csr(new_key(), CLIENT), 500)
    server_svid, client_svid = issue(ca, SERVER), issue(ca, CLIENT)
    chain = [client_svid.chain_pem]
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    ders = [c.public_bytes(serialization.Encoding.DER)
            for c in x509.load_pem_x509_certificates(chain[0])]
    timeit("validate_peer_certificate", lambda: validate_peer_certificate(
        ders, ca.bundle, CLIENT), 1000)
    timeit("server_context(svid) (rotation cost)", lambda: server_context(server_svid), 200)
    sctx, cctx = server_context(server_svid), client_context(client_svid)

    n = 1000
    start = time.process_time()
    wall = time.perf_counter()
    for _ in range(n):
        pump_handshake(sctx, cctx)
    cpu, wall = time.process_time() - start, time.perf_counter() - wall
    print(f"{'both ends on one core (memory BIO)':<44} {n / cpu:8.0f} handshakes/s CPU "
          f"({cpu / n * 1e6:.0f} µs CPU each, {n / wall:.0f}/s wall)")

    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    proc = multiprocessing.get_context("fork").Process(target=serve, args=(sctx, listener),
                                                       daemon=True)
    proc.start()
    os.sched_setaffinity(0, {1})

    def connect() -> None:
        raw = socket.create_connection(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with cctx.wrap_socket(raw) as tls:
            check_peer(tls, SERVER)
            tls.recv(1)

    try:
        for _ in range(50):
            connect()  # warm up
        timeit("loopback TCP connect + TLS 1.3 mTLS + checks", connect, 1000)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < 3:
            connect()
            count += 1
        print(f"{'loopback, 1 client, sequential':<44} {count / 3:8.0f} handshakes/s")
        served = 50 + 1000 + count
        cpu = _cpu_seconds(proc.pid) if proc.pid else float("nan")
        print(f"{'server process alone (CPU 0), from its CPU':<44} {served / cpu:8.0f} "
              f"handshakes/s per core ({cpu / served * 1e6:.0f} µs CPU each)")
    finally:
        proc.terminate()
        proc.join()


if __name__ == "__main__":
    main()
