"""Helper programs run *inside* lab pods by the authz e2e tests (stdlib only).

    python3 authz_apps.py record --port P --log FILE
        An HTTP/1.1 app that records every connection's byte count and every request line +
        Host it receives (one JSON line each, flushed), and answers 200 ``seen <target>``.
    python3 authz_apps.py send HOST PORT CASES.json
        Sends each raw request (a JSON list of latin-1 strings) on its own connection and
        prints a JSON list of the status codes (0: closed without an answer) and bodies.
    python3 authz_apps.py tls HOST PORT [CERT KEY]
        A TLS 1.3 client (no server verification) with or without a client certificate;
        prints JSON {"handshake": ok|error, "answer": first bytes or error}.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import sys
import threading
from typing import Any

_LOCK = threading.Lock()


def _record(log: str, doc: dict[str, Any]) -> None:
    with _LOCK, open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(doc) + "\n")


def record(port: int, log: str) -> None:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.settimeout(5)
            buf, total = b"", 0
            try:
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    total += len(data)
                    buf += data
                    while b"\r\n\r\n" in buf:
                        head, _, buf = buf.partition(b"\r\n\r\n")
                        self._answer(sock, head)
            except OSError:
                pass
            finally:
                _record(log, {"conn": total})

        def _answer(self, sock: socket.socket, head: bytes) -> None:
            lines = head.decode("latin-1").split("\r\n")
            host = next((ln.split(":", 1)[1].strip() for ln in lines[1:]
                         if ln.lower().startswith("host:")), None)
            parts = lines[0].split(" ")
            target = parts[1] if len(parts) == 3 else lines[0]
            _record(log, {"line": lines[0], "target": target, "host": host})
            body = f"seen {target}\n".encode("latin-1")
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("0.0.0.0", port), Handler) as server:
        server.serve_forever()


def send(host: str, port: int, cases_file: str) -> None:
    with open(cases_file, encoding="utf-8") as f:
        cases: list[str] = json.load(f)
    out = []
    for raw in cases:
        out.append(_exchange(host, port, raw.encode("latin-1")))
    print(json.dumps(out))


def _exchange(host: str, port: int, raw: bytes) -> dict[str, Any]:
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(raw)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        return {"status": 0, "body": str(exc)}
    if not data.startswith(b"HTTP/1."):
        return {"status": 0, "body": data[:200].decode("latin-1")}
    status = int(data.split(b" ", 2)[1])
    return {"status": status, "body": data.partition(b"\r\n\r\n")[2][:400].decode("latin-1")}


def tls(host: str, port: int, cert: str | None, key: str | None) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    if cert and key:
        ctx.load_cert_chain(cert, key)
    result: dict[str, Any] = {}
    try:
        with socket.create_connection((host, port), timeout=5) as raw, \
                ctx.wrap_socket(raw) as sock:
            result["handshake"] = "ok"
            sock.sendall(b"GET /tls-probe HTTP/1.1\r\nHost: web\r\n\r\n")
            result["answer"] = sock.recv(100).decode("latin-1")
    except (OSError, ssl.SSLError) as exc:
        result.setdefault("handshake", "error")
        result["answer"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "record":
        record(int(args[args.index("--port") + 1]), args[args.index("--log") + 1])
    elif cmd == "send":
        send(args[0], int(args[1]), args[2])
    else:
        tls(args[0], int(args[1]), *(args[2:4] if len(args) >= 4 else (None, None)))
