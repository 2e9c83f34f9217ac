"""Route matching: the control plane's compiled HTTPRoutes as a per-service lookup table.

``RouteTable.compile`` turns the ``routes`` list of a snapshot (shape documented in
hybridmesh/control/routes.py) into, per ``(service, port)``, one list of matches already in
Gateway API precedence order, so ``match`` is a single scan that stops at the first hit:

1. path kind: ``Exact`` before ``RegularExpression`` before ``PathPrefix`` (the spec leaves
   regular expressions' rank to the implementation; ranking them above prefixes keeps a
   catch-all ``PathPrefix /`` from shadowing them, as Envoy Gateway does);
2. within a kind, the longer value first (prefix length, or pattern length);
3. a match naming a method before one that does not;
4. more header matches first;
5. then definition order (route, then rule, then match in the snapshot's order; the control
   plane emits routes in a stable order, standing in for the spec's creation timestamp).

A route attached to a service without a port applies to every port; one with a port only to
that port, and both kinds merge under the rules above. ``hostnames`` are ignored: for mesh
(GAMMA) routes the parent Service already names the destination. A service without routes gets
a default action to itself. A malformed route is skipped as a whole (never half-applied) and
its error kept in ``RouteTable.errors``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hybridmesh.proxy.retry import RetryPolicy

__all__ = ["Backend", "NoBackendError", "RouteAction", "RouteError", "RouteTable"]

_EXACT, _REGEX, _PREFIX = 0, 1, 2
_PATH_KINDS = {"Exact": _EXACT, "RegularExpression": _REGEX, "PathPrefix": _PREFIX}


class RouteError(ValueError):
    """A compiled route the proxy cannot apply (names the route and what is wrong)."""


class NoBackendError(LookupError):
    """Every backend of the matched rule has weight 0: Gateway API says answer 500."""


@dataclass(frozen=True, slots=True)
class Backend:
    """Where a request goes: a service ``ns/name`` and port (None: the request's own port)."""

    service: str
    port: int | None
    weight: int


@dataclass(frozen=True, slots=True)
class RouteAction:
    """What a matched rule does: weighted backends, timeouts (seconds) and the retry policy.

    A timeout of ``math.inf`` means the route disabled it (Gateway API: ``0s``); None means the
    route set none and the proxy's default applies.
    """

    route: str | None
    backends: tuple[Backend, ...]
    request_timeout_s: float | None
    backend_timeout_s: float | None
    retry: RetryPolicy
    _cumulative: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        weights = (b.weight for b in self.backends)
        object.__setattr__(self, "_cumulative", tuple(itertools.accumulate(weights)))

    def choose(self, rng: random.Random) -> Backend:
        """A backend drawn in proportion to its weight; weight 0 is never chosen."""
        cumulative = self._cumulative
        if len(cumulative) == 1 and cumulative[0] > 0:
            return self.backends[0]
        total = cumulative[-1] if cumulative else 0
        if total <= 0:
            raise NoBackendError(f"route {self.route}: every backend has weight 0")
        return self.backends[bisect.bisect_right(cumulative, rng.random() * total)]


@dataclass(frozen=True, slots=True)
class _Header:
    name: str
    value: str
    pattern: re.Pattern[str] | None

    def matches(self, actual: str) -> bool:
        if self.pattern is None:
            return actual == self.value
        return self.pattern.fullmatch(actual) is not None


@dataclass(frozen=True, slots=True)
class _Match:
    """One match of one rule, with everything ``match`` needs precomputed."""

    kind: int
    value: str
    below: str  # PathPrefix: value + "/" (segment boundary); "" matches every path
    pattern: re.Pattern[str] | None
    method: str | None
    headers: tuple[_Header, ...]
    action: RouteAction
    order: tuple[int, int, int]

    def rank(self) -> tuple[int, int, int, int, tuple[int, int, int]]:
        length = len(self.pattern.pattern) if self.pattern is not None else len(self.value)
        return (self.kind, -length, self.method is None, -len(self.headers), self.order)


class RouteTable:
    """Matches requests to route actions; built once per snapshot, then read-only."""

    def __init__(
        self,
        table: Mapping[tuple[str, int | None], Sequence[_Match]],
        default_retry: RetryPolicy,
        errors: Sequence[str] = (),
    ) -> None:
        self._table = {key: tuple(ms) for key, ms in table.items()}
        self._default_retry = default_retry
        self._defaults: dict[tuple[str, int], RouteAction] = {}
        self.errors: tuple[str, ...] = tuple(errors)

    @classmethod
    def compile(cls, routes: list[Any], default_retry: RetryPolicy) -> RouteTable:
        """Build the table from a snapshot's ``routes``; bad routes land in ``errors``.

        ``routes`` is unvalidated JSON (``Any`` items, so a compiled build does not type-check
        them before ``_compile_route`` can report them as a RouteError)."""
        by_parent: dict[tuple[str, int | None], list[_Match]] = {}
        errors: list[str] = []
        for index, route in enumerate(routes or ()):
            try:
                parent, matches = _compile_route(route, index, default_retry)
            except RouteError as exc:
                errors.append(str(exc))
                continue
            by_parent.setdefault(parent, []).extend(matches)
        table: dict[tuple[str, int | None], list[_Match]] = {}
        for (service, port), matches in by_parent.items():
            table.setdefault((service, port), []).extend(matches)
            if port is None:  # portless routes also apply to every port-specific list
                for other, other_port in by_parent:
                    if other == service and other_port is not None:
                        table.setdefault((other, other_port), []).extend(matches)
        for matches in table.values():
            matches.sort(key=_Match.rank)
        return cls(table, default_retry, errors)

    def match(
        self, service: str, port: int, method: str, path: str, headers: Mapping[str, str]
    ) -> RouteAction:
        """The action of the highest-precedence match, or the default route to ``service``.

        ``path`` is the request target's path; a query string is ignored. Header names match
        case-insensitively (lowercase keys, as HTTP/2 delivers them, are the fast path).
        """
        matches = self._table.get((service, port))
        if matches is None:
            matches = self._table.get((service, None))
            if matches is None:
                return self._default(service, port)
        if "?" in path:
            path = path.partition("?")[0]
        lowered: dict[str, str] | None = None
        for m in matches:
            kind = m.kind
            if kind == _PREFIX:
                if m.below and path != m.value and not path.startswith(m.below):
                    continue
            elif kind == _EXACT:
                if path != m.value:
                    continue
            elif m.pattern is None or m.pattern.fullmatch(path) is None:
                continue
            if m.method is not None and m.method != method:
                continue
            for h in m.headers:
                actual = headers.get(h.name)
                if actual is None:
                    if lowered is None:
                        lowered = {k.lower(): v for k, v in headers.items()}
                    actual = lowered.get(h.name)
                if actual is None or not h.matches(actual):
                    break
            else:
                return m.action
        return self._default(service, port)

    def static_action(self, service: str, port: int) -> RouteAction | None:
        """The action of every request to ``service:port`` when no route has rules there
        (the default route), else None: callers may skip per-request matching."""
        if (service, port) in self._table or (service, None) in self._table:
            return None
        return self._default(service, port)

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """The matches per ``service:port`` in the order they are tried (/config_dump)."""
        return {
            f"{service}:{'*' if port is None else port}": [_describe(m) for m in matches]
            for (service, port), matches in self._table.items()
        }

    def _default(self, service: str, port: int) -> RouteAction:
        action = self._defaults.get((service, port))
        if action is None:
            action = RouteAction(
                route=None,
                backends=(Backend(service, port, 1),),
                request_timeout_s=None,
                backend_timeout_s=None,
                retry=self._default_retry,
            )
            self._defaults[(service, port)] = action
        return action


def _compile_route(
    route: Any, index: int, default_retry: RetryPolicy
) -> tuple[tuple[str, int | None], list[_Match]]:
    """One route's parent key and its matches; RouteError names the route on bad input."""
    name = route.get("name") if isinstance(route, dict) else None
    label = f"route {name!r}" if isinstance(name, str) else f"route #{index}"
    try:
        service = _str(route["service"], "service")
        port = _opt_int(route.get("port"), "port")
        matches: list[_Match] = []
        for r, rule in enumerate(_list(route.get("rules"), "rules")):
            action = _action(
                rule, name if isinstance(name, str) else None, service, port, default_retry
            )
            for m, spec in enumerate(_list(rule.get("matches"), "matches") or [{}]):
                matches.append(_compile_match(spec, action, (index, r, m)))
    except RouteError as exc:
        raise RouteError(f"{label}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError, re.error) as bad:
        # its own name: mypyc types one name across handlers (RouteError), then refuses a KeyError
        raise RouteError(f"{label}: malformed ({type(bad).__name__}: {bad})") from None
    return (service, port), matches


def _action(
    rule: Any, route: str | None, service: str, port: int | None, retry: RetryPolicy
) -> RouteAction:
    backends = tuple(
        Backend(
            _str(b["service"], "backend service"),
            _opt_int(b.get("port"), "backend port"),
            _weight(b.get("weight", 1)),
        )
        for b in _list(rule.get("backends"), "backends")
    ) or (Backend(service, port, 1),)
    timeouts = rule.get("timeouts") or {}
    return RouteAction(
        route=route,
        backends=backends,
        request_timeout_s=_seconds(timeouts.get("requestMs")),
        backend_timeout_s=_seconds(timeouts.get("backendRequestMs")),
        retry=_retry(rule.get("retry"), retry),
    )


def _compile_match(
    spec: Any, action: RouteAction, order: tuple[int, int, int]
) -> _Match:
    path = spec.get("path") or {}
    kind_name = path.get("type", "PathPrefix")
    kind = _PATH_KINDS.get(kind_name)
    if kind is None:
        raise RouteError(f"unknown path match type {kind_name!r}")
    value = _str(path.get("value", "/"), "path value")
    pattern = re.compile(value) if kind == _REGEX else None
    if kind != _REGEX and not value.startswith("/"):
        raise RouteError(f"path {value!r} must start with '/'")
    if kind == _PREFIX:
        value = value.rstrip("/")  # Gateway API: a trailing slash in a prefix is ignored
    method = spec.get("method")
    headers = tuple(_header(h) for h in _list(spec.get("headers"), "headers"))
    return _Match(
        kind,
        value,
        value + "/" if value else "",
        pattern,
        None if method is None else _str(method, "method"),
        headers,
        action,
        order,
    )


def _header(spec: Any) -> _Header:
    kind = spec.get("type", "Exact")
    if kind not in ("Exact", "RegularExpression"):
        raise RouteError(f"unknown header match type {kind!r}")
    value = _str(spec["value"], "header value")
    pattern = re.compile(value) if kind == "RegularExpression" else None
    return _Header(_str(spec["name"], "header name").lower(), value, pattern)


def _retry(spec: Any, default: RetryPolicy) -> RetryPolicy:
    if spec is None:
        return default
    try:
        return RetryPolicy(
            codes=frozenset(int(c) for c in spec.get("codes") or ()),
            attempts=int(spec.get("attempts", 1)),
            backoff_s=float(spec.get("backoffMs") or 25) / 1000.0,
            on_connect_failure=default.on_connect_failure,
        )
    except ValueError as exc:
        raise RouteError(f"retry: {exc}") from None


def _seconds(ms: object) -> float | None:
    if ms is None:
        return None
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not ms >= 0:
        raise RouteError(f"timeout {ms!r} is not a number of milliseconds >= 0")
    return math.inf if ms == 0 else ms / 1000.0


def _weight(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RouteError(f"backend weight {value!r} is not an integer >= 0")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise RouteError(f"{what} {value!r} is not a string")
    return value


def _opt_int(value: object, what: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise RouteError(f"{what} {value!r} is not an integer")
    return value


def _list(value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RouteError(f"{what} is not a list")
    return value


def _describe(m: _Match) -> dict[str, Any]:
    kind = next(k for k, v in _PATH_KINDS.items() if v == m.kind)
    return {
        "route": m.action.route,
        "path": {"type": kind, "value": m.pattern.pattern if m.pattern else m.value or "/"},
        "method": m.method,
        "headers": [
            {
                "name": h.name,
                "value": h.value,
                "type": "Exact" if h.pattern is None else "RegularExpression",
            }
            for h in m.headers
        ],
        "backends": [
            {"service": b.service, "port": b.port, "weight": b.weight} for b in m.action.backends
        ],
    }
