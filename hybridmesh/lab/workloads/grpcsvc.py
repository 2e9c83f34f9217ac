"""A real gRPC (grpcio) echo service and client, for proving gRPC through the mesh.

    python3 -m hybridmesh.lab.workloads.grpcsvc serve --port 50051 [--host 0.0.0.0]
    python3 -m hybridmesh.lab.workloads.grpcsvc call --target HOST:PORT [--unary N]
        [--stream M] [--size BYTES] [--timeout S]

No protoc codegen: the service is declared with grpcio's generic handlers and messages are
raw bytes, so the wire is ordinary gRPC (HTTP/2, length-prefixed messages, ``grpc-status``
trailers) while the package needs nothing but ``grpcio``. Two methods:

- ``/hybridmesh.lab.Echo/Unary`` (unary-unary) answers its request bytes unchanged;
- ``/hybridmesh.lab.Echo/Stream`` (unary-stream) takes ``!II`` (count, size) and answers
  ``count`` messages of ``size`` bytes, each starting with its index as ``!I``, so the client
  can check that every message arrived, in order.

``call`` runs the unary calls one after the other, then one stream, and prints one JSON
document (counts, errors by status code, rates); it exits 1 when anything failed and 2 when
the target never became reachable.
"""

from __future__ import annotations

import argparse
import json
import signal
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped]

__all__ = [
    "SERVICE",
    "STREAM_METHOD",
    "UNARY_METHOD",
    "CallReport",
    "main",
    "run_calls",
    "serve",
    "stream_request",
]

SERVICE = "hybridmesh.lab.Echo"
UNARY_METHOD = f"/{SERVICE}/Unary"
STREAM_METHOD = f"/{SERVICE}/Stream"
_COUNT_SIZE = struct.Struct("!II")
_INDEX = struct.Struct("!I")
_MAX_STREAM = 10_000_000


def _identity(data: bytes) -> bytes:
    return data


def stream_request(count: int, size: int) -> bytes:
    """The Stream method's request: how many messages, how big (at least the 4-byte index)."""
    return _COUNT_SIZE.pack(count, max(size, _INDEX.size))


# -- server ------------------------------------------------------------------------------------
def _unary(request: bytes, context: Any) -> bytes:
    return request


def _stream(request: bytes, context: Any) -> Iterator[bytes]:
    if len(request) != _COUNT_SIZE.size:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected !II (count, size)")
    count, size = _COUNT_SIZE.unpack(request)
    if count > _MAX_STREAM or size > 4 * 2**20:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "count or size too large")
    pad = b"x" * (size - _INDEX.size)
    for i in range(count):
        yield _INDEX.pack(i) + pad


def _handler() -> Any:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                _unary, request_deserializer=_identity, response_serializer=_identity
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                _stream, request_deserializer=_identity, response_serializer=_identity
            ),
        },
    )


def serve(host: str, port: int, workers: int = 8) -> int:
    """Serve until SIGTERM/SIGINT; in-flight calls get a second to finish (a pod's grace)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((_handler(),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        print(f"grpcsvc: cannot listen on {host}:{port}", file=sys.stderr)
        return 2
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"grpcsvc: serving {SERVICE} on {host}:{port}", flush=True)
    stop.wait()
    server.stop(1.0).wait()
    return 0


# -- client ------------------------------------------------------------------------------------
@dataclass
class CallReport:
    """What ``call`` measured; ``ok`` is the verdict the exit status follows."""

    target: str
    unary_calls: int = 0
    unary_ok: int = 0
    unary_seconds: float = 0.0
    stream_requested: int = 0
    stream_received: int = 0
    stream_in_order: bool = True
    stream_seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return (
            not self.errors
            and self.unary_ok == self.unary_calls
            and self.stream_received == self.stream_requested
            and self.stream_in_order
        )

    def to_json(self) -> dict[str, Any]:
        def rate(n: int, s: float) -> float:
            return round(n / s, 1) if s > 0 else 0.0

        return {
            "target": self.target,
            "ok": self.ok,
            "unary": {
                "calls": self.unary_calls,
                "ok": self.unary_ok,
                "seconds": round(self.unary_seconds, 4),
                "callsPerSecond": rate(self.unary_ok, self.unary_seconds),
            },
            "stream": {
                "requested": self.stream_requested,
                "received": self.stream_received,
                "inOrder": self.stream_in_order,
                "seconds": round(self.stream_seconds, 4),
                "messagesPerSecond": rate(self.stream_received, self.stream_seconds),
            },
            "errors": dict(self.errors),
        }


def _unary_calls(call: Callable[..., bytes], report: CallReport, n: int, size: int,
                 timeout: float) -> None:
    report.unary_calls = n
    started = time.perf_counter()
    for i in range(n):
        payload = _INDEX.pack(i) + b"u" * max(size - _INDEX.size, 0)
        try:
            answer = call(payload, timeout=timeout)
        except grpc.RpcError as exc:
            report.errors[f"unary:{exc.code().name}"] += 1
            continue
        if answer == payload:
            report.unary_ok += 1
        else:
            report.errors["unary:MISMATCH"] += 1
    report.unary_seconds = time.perf_counter() - started


def _stream_call(call: Callable[..., Iterator[bytes]], report: CallReport, m: int, size: int,
                 timeout: float) -> None:
    report.stream_requested = m
    started = time.perf_counter()
    try:
        for i, message in enumerate(call(stream_request(m, size), timeout=timeout)):
            report.stream_received += 1
            if _INDEX.unpack_from(message)[0] != i:
                report.stream_in_order = False
    except grpc.RpcError as exc:
        report.errors[f"stream:{exc.code().name}"] += 1
    report.stream_seconds = time.perf_counter() - started


def run_calls(target: str, unary: int, stream: int, size: int = 64,
              timeout: float = 10.0) -> CallReport | None:
    """Unary calls, then one stream, on one channel; None when the target never got ready."""
    report = CallReport(target=target)
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return None
        unary_call = channel.unary_unary(
            UNARY_METHOD, request_serializer=_identity, response_deserializer=_identity
        )
        stream_call = channel.unary_stream(
            STREAM_METHOD, request_serializer=_identity, response_deserializer=_identity
        )
        if unary:
            _unary_calls(unary_call, report, unary, size, timeout)
        if stream:
            _stream_call(stream_call, report, stream, size, timeout)
    return report


# -- command line ------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grpcsvc", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the echo service")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--host", default="0.0.0.0", help="address to bind (default: all)")
    s.add_argument("--workers", type=int, default=8, help="handler threads")
    c = sub.add_parser("call", help="call the service and print a JSON report")
    c.add_argument("--target", required=True, metavar="HOST:PORT")
    c.add_argument("--unary", type=int, default=100, metavar="N", help="unary calls")
    c.add_argument("--stream", type=int, default=1000, metavar="M", help="messages streamed")
    c.add_argument("--size", type=int, default=64, metavar="BYTES", help="message size")
    c.add_argument("--timeout", type=float, default=10.0, metavar="S", help="per call/ready")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.command == "serve":
        if not 0 < args.port < 65536 or args.workers < 1:
            p.error("--port must be 1..65535 and --workers >= 1")
        return serve(args.host, args.port, args.workers)
    if min(args.unary, args.stream, args.size) < 0 or args.timeout <= 0:
        p.error("--unary, --stream and --size must be >= 0, --timeout > 0")
    if args.stream > _MAX_STREAM:
        p.error(f"--stream must be at most {_MAX_STREAM}")
    report = run_calls(args.target, args.unary, args.stream, args.size, args.timeout)
    if report is None:
        print(json.dumps({"target": args.target, "ok": False,
                          "errors": {"ready": f"not ready within {args.timeout}s"}}))
        return 2
    print(json.dumps(report.to_json()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
