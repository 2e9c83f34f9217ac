"""A burst that finds no idle connection costs the connections it needs, not one per request.

Real loopback connections through ``upstream.Pool`` with a connector that takes a while (as an
mTLS handshake on a loaded machine does): the pool dials at most DIAL_LIMIT at once per
endpoint, hands every connection — dialled or released — to the oldest waiting request, and
a waiting request that goes away passes on what it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from hybridmesh.proxy._dialgate import DIAL_LIMIT, DialQueue
from hybridmesh.proxy.upstream import ConnectFailed, EndpointKey, H1Upstream, Pool, connect


class SlowConnector:
    """``upstream.connect`` after ``delay`` seconds, counting dials in flight."""

    def __init__(self, delay: float, *, refuse: bool = False) -> None:
        self.delay = delay
        self.refuse = refuse
        self.in_flight = 0
        self.most_in_flight = 0
        self.dials = 0

    async def __call__(self, key: EndpointKey, factory: Callable[[], Any], *, mark: int | None,
                       timeout: float) -> tuple[asyncio.Transport, Any]:
        self.dials += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.refuse:
                raise ConnectFailed(key, "refused (test)")
            return await connect(key, factory, mark=None, timeout=timeout)
        finally:
            self.in_flight -= 1


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[EndpointKey]:
    """A TCP server that accepts and holds connections (nothing is sent on them)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    srv = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    yield ("127.0.0.1", port)
    for w in held:
        w.close()
    srv.close()
    await srv.wait_closed()


def served(test: Callable[[EndpointKey], Awaitable[None]]) -> Callable[[], None]:
    """The async test as a plain one (no pytest-asyncio here): a fresh loop, with a server."""

    def sync() -> None:
        async def main() -> None:
            async with _server() as key:
                await test(key)

        asyncio.run(main())

    sync.__name__ = sync.__qualname__ = getattr(test, "__name__", "test")
    return sync


async def _use(pool: Pool, key: EndpointKey, hold_s: float) -> H1Upstream:
    conn = await pool.acquire(key)
    await asyncio.sleep(hold_s)
    pool.release(conn)
    return conn


@served
async def test_a_cold_burst_dials_a_few_and_shares_what_comes_back(server: EndpointKey) -> None:
    dialer = SlowConnector(delay=0.05)
    pool = Pool(mark=None, connect_timeout=5.0, connector=dialer)
    got = await asyncio.gather(*(_use(pool, server, 0.002) for _ in range(40)))
    assert len(got) == 40
    assert dialer.most_in_flight <= DIAL_LIMIT
    # the first dials come back after 50 ms and each serves a request in 2 ms: the rest are
    # served by released connections before the second round of dials ends (those go idle)
    served_by = {id(c) for c in got}
    assert DIAL_LIMIT <= len(served_by) <= 2 * DIAL_LIMIT  # not one per request
    await asyncio.sleep(0.1)
    assert pool.opened == dialer.dials <= 2 * DIAL_LIMIT, pool.opened
    assert pool.idle_count() == pool.opened
    pool.close()


@served
async def test_one_request_at_a_time_keeps_one_connection(server: EndpointKey) -> None:
    dialer = SlowConnector(delay=0.01)
    pool = Pool(mark=None, connect_timeout=5.0, connector=dialer)
    for _ in range(5):
        await _use(pool, server, 0.0)
    assert pool.opened == 1
    pool.close()


@served
async def test_each_waiter_hears_its_own_failed_dial(server: EndpointKey) -> None:
    dialer = SlowConnector(delay=0.005, refuse=True)
    pool = Pool(mark=None, connect_timeout=5.0, connector=dialer)
    results = await asyncio.gather(*(pool.acquire(server) for _ in range(10)),
                                   return_exceptions=True)
    assert all(isinstance(r, ConnectFailed) for r in results), results
    assert dialer.dials == 10 and dialer.most_in_flight <= DIAL_LIMIT


@served
async def test_a_waiter_that_goes_away_leaves_its_connection(server: EndpointKey) -> None:
    dialer = SlowConnector(delay=0.03)
    pool = Pool(mark=None, connect_timeout=5.0, connector=dialer)
    first = asyncio.get_running_loop().create_task(pool.acquire(server))
    await asyncio.sleep(0.005)
    first.cancel()  # its client went away while the pool dialled for it
    second = await pool.acquire(server)
    assert pool.opened == 1  # the dial made for the first served the second
    pool.release(second)
    pool.close()


@served
async def test_waiting_is_bounded_by_the_connect_timeout(server: EndpointKey) -> None:
    dialer = SlowConnector(delay=1.0)
    pool = Pool(mark=None, connect_timeout=0.05, connector=dialer)
    with pytest.raises(ConnectFailed) as caught:
        await pool.acquire(server)
    assert caught.value.timeout


@served
async def test_a_fresh_redo_dials_its_own_even_when_others_wait(server: EndpointKey) -> None:
    dialer = SlowConnector(delay=0.02)
    pool = Pool(mark=None, connect_timeout=5.0, connector=dialer)
    loop = asyncio.get_running_loop()
    waiting = [loop.create_task(pool.acquire(server)) for _ in range(DIAL_LIMIT)]
    await asyncio.sleep(0)
    fresh = await pool.acquire(server, fresh=True)
    assert dialer.most_in_flight == DIAL_LIMIT + 1
    conns = await asyncio.gather(*waiting)
    assert fresh not in conns
    pool.close()


def test_the_queue_alone_counts_waiters_and_dials() -> None:
    async def scenario() -> None:
        q: DialQueue[str, str] = DialQueue(limit=2)
        a, b, c = q.wait("k"), q.wait("k"), q.wait("k")
        assert q.dials_wanted("k") == 2
        q.dial_started("k")
        q.dial_started("k")
        assert q.dials_wanted("k") == 0
        b.cancel()
        assert q.deliver("k", "conn-1") and a.result() == "conn-1"
        q.dial_ended("k")
        assert q.fail("k", OSError("x")) and isinstance(c.exception(), OSError)
        assert not q.deliver("k", "conn-2")  # nobody waits any more: goes idle
        assert q.waiting("k") == 0 and q.dialling("k") == 1

    asyncio.run(scenario())
    with pytest.raises(ValueError):
        DialQueue(limit=0)
