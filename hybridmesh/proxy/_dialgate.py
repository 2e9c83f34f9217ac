"""Requests waiting for an upstream connection, and the few dials made for them.

Without a bound, every request that finds no idle connection dials its own. At a pod's first
traffic that feeds on itself: requests queue behind the first (mTLS) connect, the client
opens more connections for them, each of those dials and handshakes, the handshakes take the
CPU the first ones need, and more requests queue. Measured on a fresh ``sidecar`` lab at
1000 req/s (a load one connection carries): 64 upstream connections and p99 71–110 ms over
the first 2 s, then 0.9 ms.

So dials belong to the pool, not to a request (Envoy's pending-request queue; Go's
``http.Transport`` likewise hands a freed connection to a request waiting on a dial). A
request that finds no idle connection queues; the pool dials while more requests wait than
dials are in flight, at most DIAL_LIMIT at once per endpoint; and each connection — a dial
that completed, or one released by a finished exchange — goes to the oldest waiter. A
request therefore gets whichever comes first, and a burst costs a few handshakes, not one
per request. A dial that fails fails the oldest waiter (each request still gets its own
502/504, and outlier detection hears of each failure).

This module is the bookkeeping only — futures and counts, no I/O; ``upstream.Pool`` dials.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["DIAL_LIMIT", "DialQueue"]

DIAL_LIMIT = 2
"""Dials in flight per endpoint. The fresh-lab cold start above (one run each, first 2 s at
1000 req/s): unbounded 64 connections, p99 71–110 ms; 4: 27, 39–54 ms; 2: 13–14, 17–19 ms; 1: 8,
11 ms. Two keeps most of that gain while a pool that really needs many connections (a slow
backend under high concurrency) still grows by two per connect time — a few hundred per
second — where one would halve that ramp."""

C = TypeVar("C")
K = TypeVar("K", bound=Hashable)


class DialQueue(Generic[K, C]):
    """Waiting requests (futures, oldest first) and dials in flight, per key."""

    __slots__ = ("_dialling", "_waiters", "limit")

    def __init__(self, limit: int = DIAL_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"dial limit must be at least 1, got {limit}")
        self.limit = limit
        self._dialling: dict[K, int] = {}
        self._waiters: dict[K, deque[asyncio.Future[C]]] = {}

    def wait(self, key: K) -> asyncio.Future[C]:
        """Queue a request; the future gets a connection, or the exception a dial raised."""
        fut: asyncio.Future[C] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.get(key)
        if waiters is None:
            waiters = self._waiters[key] = deque()
        waiters.append(fut)
        return fut

    def dials_wanted(self, key: K) -> int:
        """How many more dials to start now: one per waiter not yet covered, within limit."""
        dialling = self._dialling.get(key, 0)
        return max(0, min(self.limit, self.waiting(key)) - dialling)

    def dial_started(self, key: K) -> None:
        self._dialling[key] = self._dialling.get(key, 0) + 1

    def dial_ended(self, key: K) -> None:
        left = self._dialling.get(key, 0) - 1
        if left > 0:
            self._dialling[key] = left
        else:
            self._dialling.pop(key, None)

    def deliver(self, key: K, conn: C) -> bool:
        """Give a connection to the oldest waiter; False when nobody waits."""
        if not self._waiters:  # the common case once warm: one dict truth test per release
            return False
        fut = self._oldest(key)
        if fut is None:
            return False
        fut.set_result(conn)
        return True

    def fail(self, key: K, exc: BaseException) -> bool:
        """A dial failed: the oldest waiter gets its exception; False when nobody waits."""
        fut = self._oldest(key)
        if fut is None:
            return False
        fut.set_exception(exc)
        return True

    def dialling(self, key: K) -> int:
        return self._dialling.get(key, 0)

    def waiting(self, key: K) -> int:
        waiters = self._waiters.get(key)
        return sum(1 for f in waiters if not f.done()) if waiters else 0

    def _oldest(self, key: K) -> asyncio.Future[C] | None:
        """Pop the oldest waiter still waiting (cancelled ones are dropped on the way)."""
        waiters = self._waiters.get(key)
        found = None
        while waiters and found is None:
            fut = waiters.popleft()
            if not fut.done():
                found = fut
        if not waiters:
            self._waiters.pop(key, None)
        return found
