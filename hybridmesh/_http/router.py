"""Method + path routing with ``{param}`` segments; 404 and 405 come for free.

Deliberately tiny: the control-plane API has a handful of fixed routes, so a list scan over
pre-split patterns is plenty and easy to reason about.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote

from .message import HttpError, Request, Response

__all__ = ["Handler", "Router"]

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]
"""``async def handler(request, params) -> Response``; params are the decoded ``{name}`` parts."""


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> _Pattern:
        if not text.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {text!r}")
        segments = tuple(text.strip("/").split("/")) if text != "/" else ()
        for seg in segments:
            if "{" in seg and not (seg.startswith("{") and seg.endswith("}") and len(seg) > 2):
                raise ValueError(f"a parameter must be a whole segment like {{name}}: {text!r}")
        return cls(text, segments)

    def match(self, parts: tuple[str, ...]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for seg, part in zip(self.segments, parts, strict=True):
            if seg.startswith("{"):
                if not part:
                    return None
                params[seg[1:-1]] = unquote(part)
            elif seg != part:
                return None
        return params


class Router:
    """Maps (method, path pattern) to handlers; the router itself is the server's app callable."""

    def __init__(self) -> None:
        self._routes: list[tuple[_Pattern, dict[str, Handler]]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        parsed = _Pattern.parse(pattern)
        for existing, methods in self._routes:
            if existing.segments == parsed.segments:
                if method.upper() in methods:
                    raise ValueError(f"duplicate route {method} {pattern}")
                methods[method.upper()] = handler
                return
        self._routes.append((parsed, {method.upper(): handler}))

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def register(handler: Handler) -> Handler:
            self.add(method, pattern, handler)
            return handler

        return register

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """The handler and params for a request, or HttpError 404/405 (with the allowed methods)."""
        parts = tuple(path.strip("/").split("/")) if path.strip("/") else ()
        allowed: set[str] = set()
        for pattern, methods in self._routes:
            params = pattern.match(parts)
            if params is None:
                continue
            handler = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
            if handler is not None:
                return handler, params
            allowed.update(methods)
        if allowed:
            raise _MethodNotAllowed(sorted(allowed))
        raise HttpError(404, f"no route for {path}")

    async def __call__(self, request: Request) -> Response:
        try:
            handler, params = self.resolve(request.method, request.path)
        except _MethodNotAllowed as exc:
            response = exc.to_response()
            headers = {**response.headers, "Allow": ", ".join(exc.allowed)}
            return Response(405, headers, response.body)
        return await handler(request, params)


class _MethodNotAllowed(HttpError):
    def __init__(self, allowed: list[str]) -> None:
        super().__init__(405, f"method not allowed; allowed: {', '.join(allowed)}")
        self.allowed = allowed
