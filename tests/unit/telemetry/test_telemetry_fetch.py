"""fetch: GET /metrics over a socket the caller's connect() made (loopback stands in for netns)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from hybridmesh.telemetry.fetch import FetchError, fetch_metrics

BODY = b"# TYPE request_total counter\nrequest_total 3\n"


class _Server:
    """One-shot raw HTTP answers on 127.0.0.1, so framing cases are exact."""

    def __init__(self, answer: bytes | None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self.requests.append(conn.recv(65536))
            if self.answer is None:  # a proxy that accepts and never answers
                conn.recv(1)
                return
            conn.sendall(self.answer)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[list[_Server]]:
    servers: list[_Server] = []
    yield servers
    for server in servers:
        server.close()


def _connect_to(port: int, seen: list[str]):  # type: ignore[no-untyped-def]
    def connect(netns: str, ip: str, _port: int, timeout: float) -> socket.socket:
        seen.append(f"{netns} {ip}:{_port}")
        return socket.create_connection(("127.0.0.1", port), timeout)

    return connect


def test_body_of_a_200_and_the_request_it_sent(serve: list[_Server]) -> None:
    server = _Server(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
    serve.append(server)
    seen: list[str] = []
    text = fetch_metrics("node-1", "10.0.1.5", connect=_connect_to(server.port, seen))
    assert text == BODY.decode()
    assert seen == ["hm-node-node-1 10.0.1.5:15020"]
    server.thread.join(5)
    assert server.requests[0].startswith(b"GET /metrics HTTP/1.1\r\n")
    assert b"Host: 10.0.1.5:15020\r\n" in server.requests[0]


def test_chunked_body(serve: list[_Server]) -> None:
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    server = _Server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    serve.append(server)
    assert fetch_metrics("n", "10.0.0.1", connect=_connect_to(server.port, [])) == BODY.decode()


def test_non_200_is_a_fetch_error(serve: list[_Server]) -> None:
    server = _Server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    serve.append(server)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_metrics("n", "10.0.0.1", connect=_connect_to(server.port, []))


def test_silent_proxy_times_out(serve: list[_Server]) -> None:
    server = _Server(None)
    serve.append(server)
    with pytest.raises(FetchError, match="timed out"):
        fetch_metrics("n", "10.0.0.1", timeout=0.2, connect=_connect_to(server.port, []))


def test_garbage_answer_is_a_fetch_error(serve: list[_Server]) -> None:
    server = _Server(b"SSH-2.0-OpenSSH\r\n")
    serve.append(server)
    with pytest.raises(FetchError, match=r"GET http://10\.0\.0\.1:15020/metrics"):
        fetch_metrics("n", "10.0.0.1", connect=_connect_to(server.port, []))


def test_refused_connect_names_the_node() -> None:
    def refuse(netns: str, ip: str, port: int, timeout: float) -> socket.socket:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(FetchError, match=r"connect to 10.0.0.1:15020 from node n1: .*refused"):
        fetch_metrics("n1", "10.0.0.1", connect=refuse)


def test_missing_netns_is_a_fetch_error() -> None:
    """The real connect (no injection): the lab's node netns does not exist here."""
    with pytest.raises(FetchError, match="no network namespace"):
        fetch_metrics("no-such-node-xyz", "10.0.0.1", timeout=0.5)
