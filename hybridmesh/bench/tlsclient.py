"""Full mTLS handshakes in a loop: the client of the ``tls-handshake`` scenario.

``python -m hybridmesh.bench.tlsclient --connect IP:PORT --cert C --key K --ca B`` runs
``--procs`` processes (the handshake is CPU-bound in the client too; one process would
measure Python, not the proxy) that each connect, do a full TLS 1.3 handshake presenting the
client certificate, then half-close and read to EOF, and count. The half-close matters: in
TLS 1.3 the client finishes its handshake before the server has even read the client's
certificate, so a client that closed at once would count handshakes the server never
verified. Reading to EOF waits for the server to process everything we sent; a server that
refused our certificate answers with an alert, which counts as a failure.

No session resumption (a new context per process, tickets never reused): every handshake is
a full one, as ``openssl s_time -new`` does. Sockets carry ``SO_MARK`` (``--mark``) so the
client pod's own capture lets them through and they reach the server's proxy directly.
Prints one JSON line: handshakes and failures in the measured window, its length, the rate.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Tally", "Target", "context", "handshake_once", "main", "run"]

_SO_MARK = 36


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    cert: str
    key: str
    ca: str
    alpn: tuple[str, ...] = ("http/1.1",)
    mark: int | None = 0x539
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class Tally:
    handshakes: int
    failures: int
    warmup_handshakes: int
    errors: tuple[str, ...] = ()  # the first few failure reasons


def context(target: Target) -> ssl.SSLContext:
    """TLS 1.3, our certificate, the mesh trust bundle; SPIFFE IDs are URIs, not host names."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(target.cert, target.key)
    ctx.load_verify_locations(target.ca)
    if target.alpn:
        ctx.set_alpn_protocols(list(target.alpn))
    return ctx


def handshake_once(ctx: ssl.SSLContext, target: Target) -> None:
    """One full handshake, confirmed by the server (raises OSError/SSLError if refused)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if target.mark is not None:
            raw.setsockopt(socket.SOL_SOCKET, _SO_MARK, target.mark)
        raw.settimeout(target.timeout)
        raw.connect((target.host, target.port))
    except OSError:
        raw.close()
        raise
    with ctx.wrap_socket(raw) as tls:  # takes the fd over; closes it if the handshake fails
        _drain(tls)


def _drain(tls: ssl.SSLSocket) -> None:
    """Half-close the TCP side (the TLS object stays), then read until the server closes:
    it has read our certificate and Finished by then, or it answers with an alert."""
    socket.socket.shutdown(tls, socket.SHUT_WR)
    try:
        while tls.recv(4096):
            pass  # session tickets, if the server sends any
    except ssl.SSLEOFError:
        pass  # closed without close_notify: the handshake was still complete
    except ssl.SSLError as exc:
        if "ALERT" in (exc.reason or "").upper():
            raise  # the server refused us (e.g. our certificate)


def _worker(target: Target, start: float, measure_from: float, until: float,
            out: multiprocessing.SimpleQueue[Tally]) -> None:  # fmt: skip
    ctx = context(target)
    done = failed = warm = 0
    errors: list[str] = []
    time.sleep(max(start - time.monotonic(), 0.0))
    while (now := time.monotonic()) < until:
        try:
            handshake_once(ctx, target)
        except (OSError, ssl.SSLError) as exc:
            if now >= measure_from:
                failed += 1
                if len(errors) < 3:
                    errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if now >= measure_from:
            done += 1
        else:
            warm += 1
    out.put(Tally(done, failed, warm, tuple(errors)))


def run(target: Target, procs: int, warmup: float, seconds: float) -> dict[str, object]:
    """``procs`` workers for ``warmup`` + ``seconds``; the window's totals."""
    queue: multiprocessing.SimpleQueue[Tally] = multiprocessing.SimpleQueue()
    start = time.monotonic() + 0.2
    measure_from, until = start + warmup, start + warmup + seconds
    workers = [
        multiprocessing.Process(target=_worker, args=(target, start, measure_from, until, queue))
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    tallies = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    handshakes = sum(t.handshakes for t in tallies)
    return {
        "handshakes": handshakes,
        "failures": sum(t.failures for t in tallies),
        "warmup_handshakes": sum(t.warmup_handshakes for t in tallies),
        "seconds": seconds,
        "handshakes_per_s": round(handshakes / seconds, 2),
        "procs": procs,
        "errors": [e for t in tallies for e in t.errors][:3],
    }


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hybridmesh.bench.tlsclient", description=__doc__)
    p.add_argument("--connect", required=True, help="IP:PORT")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--alpn", default="http/1.1", help="comma list; empty for none")
    p.add_argument("--mark", type=lambda v: int(v, 0), default=0x539, help="SO_MARK, 0 = none")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--duration", type=float, default=2.0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    host, _, port = args.connect.rpartition(":")
    if not host or not port.isdigit():
        print(f"--connect must be IP:PORT, got {args.connect!r}", file=sys.stderr)
        return 2
    target = Target(host, int(port), args.cert, args.key, args.ca,
                    tuple(a for a in args.alpn.split(",") if a), args.mark or None)  # fmt: skip
    try:
        context(target)  # bad files fail here, once, with a clear message
    except (OSError, ssl.SSLError) as exc:
        print(f"cannot load the client credentials: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(run(target, max(args.procs, 1), args.warmup, args.duration)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
