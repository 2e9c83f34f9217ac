"""Test peer for the L4 policy tests, run inside a network namespace.

serve PORT...   TCP echo (line by line) on [::]:PORT (dual stack) for each port; prints "ready".
client          reads commands on stdin, answers one line each on stdout:
                  connect NAME SRC DST PORT TIMEOUT -> ok | timeout | <errno name>
                  send NAME TEXT TIMEOUT            -> the echoed line | timeout | <errno name>
                  close NAME                        -> closed
                  storm SRC DST PORT TIMEOUT SECONDS -> "<connected> <failed>": connects
                                                       one after another for SECONDS
                  rr NAME COUNT                     -> done: COUNT request/responses
"""

from __future__ import annotations

import errno
import selectors
import socket
import sys
import time


def serve(ports: list[int]) -> None:
    sel = selectors.DefaultSelector()
    for port in ports:
        server = socket.create_server(
            ("::", port), family=socket.AF_INET6, backlog=512, dualstack_ipv6=True
        )
        sel.register(server, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "conn":
                data = sock.recv(65536)
                if data:
                    sock.sendall(data)
                else:
                    sel.unregister(sock)
                    sock.close()
            else:
                conn, _ = sock.accept()
                sel.register(conn, selectors.EVENT_READ, "conn")


def _error(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return errno.errorcode.get(exc.errno or 0, str(exc))


def connect(src: str, dst: str, port: int, timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    try:
        sock.bind((src, 0))
        sock.connect((dst, port))
    except OSError:
        sock.close()
        raise
    return sock


def storm(src: str, dst: str, port: int, timeout: float, seconds: float) -> str:
    connected = failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            connect(src, dst, port, timeout).close()
            connected += 1
        except OSError:
            failed += 1
    return f"{connected} {failed}"


def client() -> None:
    socks: dict[str, socket.socket] = {}
    for line in sys.stdin:
        cmd, *args = line.split()
        try:
            if cmd == "connect":
                name, src, dst, port, timeout = args
                socks[name] = connect(src, dst, int(port), float(timeout))
                answer = "ok"
            elif cmd == "send":
                name, text, timeout = args
                socks[name].settimeout(float(timeout))
                socks[name].sendall(text.encode() + b"\n")
                answer = socks[name].recv(4096).decode().strip()
            elif cmd == "rr":
                name, count = args
                sock = socks[name]
                sock.settimeout(2)
                for _ in range(int(count)):
                    sock.sendall(b"x\n")
                    sock.recv(64)
                answer = "done"
            elif cmd == "storm":
                src, dst, port, timeout, seconds = args
                answer = storm(src, dst, int(port), float(timeout), float(seconds))
            else:
                socks.pop(args[0]).close()
                answer = "closed"
        except OSError as exc:
            answer = _error(exc)
        print(answer, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve([int(p) for p in sys.argv[2:]])
    else:
        client()
