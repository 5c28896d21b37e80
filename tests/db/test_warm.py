"""Read connections kept between reads (db/warm.py), against a real PostgreSQL: reused
without a checkout only where the pool would not have pinged them either."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app import open_database
from db.direct import fetch
from db.engine import Database
from db.warm import WarmReads
from settings import Settings
from tests.clock import FakeClock
from tests.db.admin import admin_connect, database_name, eventually, terminate_app_backends

PID = select(func.pg_backend_pid().label("pid"))


async def backend_pid(conn: AsyncConnection) -> int:
    """A direct read (db/direct.py), as the server's hot reads are."""
    [row] = await fetch(conn, PID, {})
    return int(row.pid)


class Watched:
    """A Database as the server opens it, whose kept connections follow `clock`, with
    its pool's checkouts counted and the checkout pings (`SELECT 1`) seen."""

    def __init__(self, database_url: str, clock: FakeClock, **settings: object) -> None:
        config = Settings(database_url=database_url, **settings)  # type: ignore[arg-type]
        self.db = open_database(config, database_url)
        self.db.warm = WarmReads(config.db_ping_idle, now=clock)
        self.checkouts = 0
        self.pings = 0
        self._watched: set[int] = set()
        event.listen(self.db.engine.sync_engine, "checkout", self._checkout)

    def _checkout(self, dbapi_connection: object, _record: object, _proxy: object) -> None:
        self.checkouts += 1
        driver = dbapi_connection.driver_connection  # type: ignore[attr-defined]
        if id(driver) not in self._watched:
            self._watched.add(id(driver))
            driver.add_query_logger(lambda r: self._seen(r.query))

    def _seen(self, query: str) -> None:
        self.pings += query == "SELECT 1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def watched(database_url: str, clock: FakeClock) -> AsyncIterator[Watched]:
    w = Watched(database_url, clock, db_ping_idle=1.0, pool_size=2, pool_max_overflow=0)
    yield w
    await w.db.dispose()


@pytest.fixture
async def one_connection(database_url: str, clock: FakeClock) -> AsyncIterator[Watched]:
    """A pool of one connection, which a kept read connection would starve."""
    w = Watched(database_url, clock, pool_size=1, pool_max_overflow=0, pool_timeout=5.0)
    yield w
    await w.db.dispose()


async def test_the_server_keeps_read_connections_for_its_ping_idle(database_url: str) -> None:
    for ping_idle, kept in ((1.0, 1), (0.0, 0)):
        settings = Settings(database_url=database_url, db_ping_idle=ping_idle)
        db = open_database(settings, database_url)
        try:
            assert db.warm.window == ping_idle
            await db.read(backend_pid)
            assert len(db.warm) == kept
        finally:
            await db.dispose()


async def test_reads_within_the_window_reuse_one_connection_without_a_checkout(
    watched: Watched, clock: FakeClock
) -> None:
    pids = set()
    for _ in range(5):
        pids.add(await watched.db.read(backend_pid))
        clock.advance(0.5)  # each within 1 s of the previous read
    assert len(pids) == 1
    assert (watched.checkouts, watched.pings) == (1, 0)
    assert watched.db.pool_counts() == (0, 1)  # kept: idle for /metrics


async def test_a_connection_idle_past_the_window_goes_back_and_is_pinged(
    watched: Watched, clock: FakeClock
) -> None:
    await watched.db.read(backend_pid)
    clock.advance(1.0)
    await watched.db.read(backend_pid)
    # Returned to the pool as idle for 1 s: its checkout pinged it, as the pool would
    # have pinged a connection checked in a second earlier.
    assert (watched.checkouts, watched.pings) == (2, 1)


async def test_a_write_never_waits_for_connections_kept_idle(one_connection: Watched) -> None:
    w = one_connection
    await w.db.read(backend_pid)
    assert w.db.pool_counts() == (0, 1)
    async with asyncio.timeout(2):  # the pool's only connection is kept by the reads
        assert await w.db.write(backend_pid)
    assert w.pings == 1  # a write's checkout always pings
    assert w.db.stats.retries == 0


async def test_a_waiting_checkout_gets_a_released_read_connection(
    one_connection: Watched,
) -> None:
    w = one_connection
    release = asyncio.Event()

    async def held(conn: AsyncConnection) -> int:
        await release.wait()
        return await backend_pid(conn)

    first = asyncio.create_task(w.db.read(held))
    await eventually(lambda: w.checkouts == 1, within=5)
    second = asyncio.create_task(w.db.read(backend_pid))  # waits on the pool
    await asyncio.sleep(0.05)
    release.set()
    async with asyncio.timeout(2):  # not the pool timeout
        assert await first == await second
    assert w.db.stats.retries == 0


async def test_a_kept_connection_killed_while_idle_is_replaced_without_a_retry(
    watched: Watched, database_url: str
) -> None:
    killed = await watched.db.read(backend_pid)
    admin = await admin_connect(database_url)
    try:
        assert await terminate_app_backends(admin, database_name(database_url)) == 1
    finally:
        await admin.close()
    [(conn, _)] = watched.db.warm._idle

    def closed() -> bool:
        return bool(conn.sync_connection._dbapi_connection.driver_connection.is_closed())  # type: ignore[union-attr]

    await eventually(closed, within=5)  # asyncpg has seen the backend go
    assert await watched.db.read(backend_pid) != killed
    assert watched.db.stats.retries == 0
    assert watched.checkouts == 2


async def test_reads_that_began_a_transaction_are_not_kept(watched: Watched) -> None:
    async def through_sqlalchemy(conn: AsyncConnection) -> int:
        return int((await conn.execute(text("SELECT 1"))).scalar_one())  # autobegins

    for _ in range(2):
        await watched.db.read(through_sqlalchemy)
    assert watched.checkouts == 2
    assert watched.db.pool_counts() == (0, 1)


async def test_failed_reads_are_not_kept(watched: Watched) -> None:
    async def fails(conn: AsyncConnection) -> None:
        await backend_pid(conn)
        raise LookupError("after the statement")

    with pytest.raises(LookupError):
        await watched.db.read(fails)
    assert len(watched.db.warm) == 0
    await watched.db.read(backend_pid)
    assert watched.checkouts == 2


async def test_dispose_returns_kept_connections_and_keeps_no_more(watched: Watched) -> None:
    db: Database = watched.db
    await asyncio.gather(*(db.read(backend_pid) for _ in range(2)))
    assert len(db.warm) >= 1
    await db.warm.close()
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    await db.read(backend_pid)
    assert len(db.warm) == 0
