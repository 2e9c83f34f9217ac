"""HTTP/1.1 message values shared by the server, the client and the router.

They are plain values (no I/O) so handlers and tests can build and inspect them directly;
serialisation to bytes lives here too because server and client both need it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

__all__ = [
    "Headers",
    "HttpError",
    "Request",
    "Response",
    "reason_phrase",
    "serialize_response_head",
]


class Headers(Mapping[str, str]):
    """Case-insensitive, order-keeping header map; repeated fields stay available via getall.

    HTTP field names are case-insensitive (RFC 9110 §5.1); handlers should not care whether a
    peer sent ``content-type`` or ``Content-Type``.
    """

    __slots__ = ("_index", "_items")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: list[tuple[str, str]] = [(str(k), str(v)) for k, v in pairs]
        self._index: dict[str, str] = {}
        for name, value in self._items:
            self._index.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._index[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def getall(self, name: str) -> list[str]:
        """Every value of a repeated field, in the order received."""
        lowered = name.lower()
        return [v for k, v in self._items if k.lower() == lowered]

    def raw(self) -> list[tuple[str, str]]:
        """The fields exactly as received or given (original case, duplicates kept)."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(slots=True)
class Request:
    """One parsed request; ``path`` and ``query`` are as sent (still percent-encoded)."""

    method: str
    path: str
    query: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    remote: str = ""

    def query_params(self) -> dict[str, str]:
        """The query string as a dict, last value winning for repeated keys."""
        return {k: v[-1] for k, v in parse_qs(self.query, keep_blank_values=True).items()}

    def json(self) -> Any:
        """The body decoded as JSON; raises HttpError(400) on bad input so handlers needn't."""
        try:
            return json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from None


@dataclass(slots=True)
class Response:
    """A response to send (server) or that was received (client, with a ``Headers`` map)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        body = json.dumps(data, separators=(",", ":")).encode()
        return cls(status, {"Content-Type": "application/json"}, body)

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, {"Content-Type": "text/plain; charset=utf-8"}, text.encode())

    def json_body(self) -> Any:
        """Decode the body as JSON (client side convenience)."""
        return json.loads(self.body)


class HttpError(Exception):
    """Raised by a handler to answer with ``status`` and a plain-text message instead of 500."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or reason_phrase(status))
        self.status = status
        self.message = message or reason_phrase(status)

    def to_response(self) -> Response:
        return Response.text(self.message + "\n", self.status)


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_HOP_BY_HOP = frozenset({"content-length", "connection", "transfer-encoding"})


def _one_line(value: str) -> str:
    """Fold CR/LF so a value echoed from a request can never inject a header field."""
    if "\r" in value or "\n" in value:
        return value.replace("\r", " ").replace("\n", " ")
    return value


def serialize_response_head(response: Response, keep_alive: bool) -> bytes:
    """Status line and fields; Content-Length and Connection are always ours, never the handler's.

    Owning framing here is what keeps a handler from desynchronising a keep-alive connection.
    """
    lines = [f"HTTP/1.1 {response.status} {reason_phrase(response.status)}"]
    lines.extend(
        f"{k}: {_one_line(v)}" for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP
    )
    lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
