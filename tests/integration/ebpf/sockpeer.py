"""Test peer run inside a network namespace: ``serve`` answers, ``connect`` reports what it saw.

serve PORT ADDR...    TCP on 0.0.0.0:PORT and UDP on each ADDR:PORT; every connection or
                      datagram is answered with the local address it reached ("ip:port").
connect PROTO VIP PORT COUNT
                      COUNT sockets to VIP:PORT; prints a JSON list of {reply, peer, error}.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import sys


def serve(port: int, addrs: list[str]) -> None:
    sel = selectors.DefaultSelector()
    tcp = socket.create_server(("0.0.0.0", port), backlog=512)
    sel.register(tcp, selectors.EVENT_READ, "tcp")
    for addr in addrs:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((addr, port))
        sel.register(udp, selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "tcp":
                conn, _ = sock.accept()
                ip, p = conn.getsockname()
                conn.sendall(f"{ip}:{p}\n".encode())
                conn.close()
            else:
                _, peer = sock.recvfrom(64)
                ip, p = sock.getsockname()
                sock.sendto(f"{ip}:{p}\n".encode(), peer)


def one(proto: str, vip: str, port: int) -> dict[str, str | None]:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(2)
        try:
            s.connect((vip, port))
            ip, p = s.getpeername()
            if proto == "udp":
                s.send(b"?")
            reply = s.recv(64).decode().strip()
        except OSError as exc:
            code = exc.errno or 0
            return {"reply": None, "peer": None, "error": errno.errorcode.get(code, str(exc))}
    return {"reply": reply, "peer": f"{ip}:{p}", "error": None}


def main(argv: list[str]) -> None:
    if argv[0] == "serve":
        serve(int(argv[1]), argv[2:])
    else:
        proto, vip, port, count = argv[1], argv[2], int(argv[3]), int(argv[4])
        print(json.dumps([one(proto, vip, port) for _ in range(count)]))


if __name__ == "__main__":
    main(sys.argv[1:])
