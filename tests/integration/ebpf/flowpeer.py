"""Test peer for the flows tests, run inside a network namespace.

serve PORT REPLY        accept forever; read each connection to EOF, answer REPLY bytes, close.
connect IP PORT SEND [COUNT] [--step]
                        COUNT connections: send SEND bytes, half-close, read to EOF, close.
                        --step: print "connected" after connecting and wait for a line on stdin
                        before sending (so the test can break the path in between).
                        Prints a JSON list of {"port": local port, "received": bytes}.
"""

from __future__ import annotations

import json
import socket
import sys


def serve(port: int, reply: int) -> None:
    server = socket.create_server(("0.0.0.0", port), backlog=512)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            while conn.recv(65536):
                pass
            conn.sendall(b"r" * reply)


def one(ip: str, port: int, send: int, step: bool) -> dict[str, int]:
    with socket.create_connection((ip, port), timeout=10) as sock:
        if step:
            print("connected", flush=True)
            sys.stdin.readline()
        sock.sendall(b"s" * send)
        sock.shutdown(socket.SHUT_WR)
        received = 0
        while chunk := sock.recv(65536):
            received += len(chunk)
        return {"port": sock.getsockname()[1], "received": received}


def main(argv: list[str]) -> None:
    if argv[0] == "serve":
        serve(int(argv[1]), int(argv[2]))
        return
    step = "--step" in argv
    args = [a for a in argv[1:] if a != "--step"]
    count = int(args[3]) if len(args) > 3 else 1
    seen = [one(args[0], int(args[1]), int(args[2]), step) for _ in range(count)]
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
