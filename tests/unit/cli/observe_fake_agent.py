"""A fake node agent: the flows API of hybridmesh.agent.api on a real unix socket.

``GET /v1/flows?last=N`` and the long poll ``?follow=1&after=S&timeout=T``, with ``X-Hm-Seq``;
``push`` adds an event (a FlowEvent.to_json() dict, or any line to test bad input).
"""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


class FakeAgent:
    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.events: list[Any] = []
        self.requests: list[str] = []
        self.closed = False
        self._changed = threading.Condition()
        self._server = _Server(str(sock), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )
        self._thread.start()

    def push(self, *events: Any) -> None:
        with self._changed:
            self.events.extend(events)
            self._changed.notify_all()

    def answer(self, query: dict[str, str]) -> tuple[list[Any], int]:
        if query.get("follow") == "1":
            after = int(query.get("after", "0"))
            with self._changed:
                self._changed.wait_for(lambda: len(self.events) > after or self.closed,
                                       float(query.get("timeout", "1")))  # fmt: skip
                return self.events[after:], len(self.events)
        last = int(query.get("last", "100"))
        with self._changed:
            return (self.events[-last:] if last else []), len(self.events)

    def close(self) -> None:
        """Stop serving; a long poll in progress is answered at once (as a dying agent's
        connection would end)."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self.sock.unlink(missing_ok=True)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _handler(agent: FakeAgent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            agent.requests.append(self.path)
            if url.path != "/v1/flows":
                self.send_error(404)
                return
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            events, seq = agent.answer(query)
            lines = (e if isinstance(e, str) else json.dumps(e) for e in events)
            body = "".join(f"{line}\n" for line in lines).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("X-Hm-Seq", str(seq))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

        def address_string(self) -> str:
            return "unix"

    return Handler
