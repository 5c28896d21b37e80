"""The engine and `Database.run` against a real PostgreSQL: settings, checkout, logging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from app import open_database
from db.engine import Database
from db.errors import (
    Category,
    CheckoutFailed,
    DatabaseQueryError,
    DatabaseUnavailableError,
    classify,
)
from settings import Settings
from tests.db.admin import admin_connect, database_name, terminate_app_backends
from tests.faultproxy import FaultProxy


async def select_one(conn: AsyncConnection) -> int:
    return int((await conn.execute(text("SELECT 1"))).scalar_one())


@pytest.fixture
async def tuned(database_url: str) -> AsyncIterator[Database]:
    """A Database opened the way the server opens it, from REELGRAPH_* variables."""
    settings = Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "REELGRAPH_POOL_SIZE": "3",
            "REELGRAPH_POOL_MAX_OVERFLOW": "1",
            "REELGRAPH_POOL_TIMEOUT": "4.5",
            "REELGRAPH_DB_MAX_RETRIES": "3",
            "REELGRAPH_DB_RETRY_BASE": "0.05",
            "REELGRAPH_DB_RETRY_CAP": "0.4",
            "REELGRAPH_DB_ATTEMPT_TIMEOUT": "2.5",
            "REELGRAPH_DB_DEADLINE": "7",
            "REELGRAPH_DB_CONNECT_TIMEOUT": "1.5",
            "REELGRAPH_DB_LOCK_TIMEOUT": "1.25",
            "REELGRAPH_DB_IDLE_IN_TRANSACTION_TIMEOUT": "9",
            "REELGRAPH_DB_SLOW_QUERY": "0.2",
        }
    )
    assert settings.db_connect_timeout == 1.5
    database = open_database(settings, database_url)
    yield database
    await database.dispose()


# --- settings reach the engine -----------------------------------------------------------


async def test_settings_reach_the_policy_the_pool_and_the_session(tuned: Database) -> None:
    policy = tuned.policy
    assert (policy.max_retries, policy.base_delay, policy.max_delay) == (3, 0.05, 0.4)
    assert (policy.attempt_timeout, policy.deadline) == (2.5, 7.0)
    pool = tuned.engine.pool
    assert pool.size() == 3  # type: ignore[attr-defined]
    assert pool.timeout() == 4.5  # type: ignore[attr-defined]

    async def session(conn: AsyncConnection) -> dict[str, str]:
        names = (
            "statement_timeout",
            "lock_timeout",
            "idle_in_transaction_session_timeout",
            "application_name",
        )
        return {n: (await conn.execute(text(f"SHOW {n}"))).scalar_one() for n in names}

    assert await tuned.read(session) == {
        "statement_timeout": "3500ms",  # attempt timeout + 1 s
        "lock_timeout": "1250ms",
        "idle_in_transaction_session_timeout": "9s",
        "application_name": "reelgraph",
    }


async def test_reads_autocommit_each_statement_writes_share_one_transaction(db: Database) -> None:
    async def two_transaction_ids(conn: AsyncConnection) -> tuple[int, int]:
        first = (await conn.execute(text("SELECT txid_current()"))).scalar_one()
        second = (await conn.execute(text("SELECT txid_current()"))).scalar_one()
        return int(first), int(second)

    first, second = await db.read(two_transaction_ids)
    assert first != second
    first, second = await db.write(two_transaction_ids)
    assert first == second
    # The write's connection went back to the pool in autocommit, the pool's default.
    first, second = await db.read(two_transaction_ids)
    assert first != second


async def test_slow_statements_are_logged_with_their_duration(
    tuned: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async def work(conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT 1"))
        await conn.execute(text("SELECT pg_sleep(0.3)"))

    with caplog.at_level(logging.WARNING, logger="reelgraph.db"):
        await tuned.read(work)

    slow = [r for r in caplog.records if r.getMessage().startswith("slow query")]
    assert len(slow) == 1, [r.getMessage() for r in caplog.records]
    record = slow[0]
    assert 300 <= record.duration_ms < 2000  # type: ignore[attr-defined]
    assert "pg_sleep(0.3)" in record.statement  # type: ignore[attr-defined]
    assert f"{record.duration_ms:.1f} ms" in record.getMessage()  # type: ignore[attr-defined]


# --- retries: logged and counted ---------------------------------------------------------


async def test_each_retry_is_logged_and_counted(
    tuned: Database, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def conflicted(conn: AsyncConnection) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:  # a real 40001 raised by the server, twice
            await conn.execute(
                text("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
            )
        return await select_one(conn)

    with caplog.at_level(logging.WARNING, logger="reelgraph.db"):
        assert await tuned.write(conflicted) == 1

    retries = retry_records(caplog)
    assert [(r.attempt, r.sqlstate) for r in retries] == [(1, "40001"), (2, "40001")]  # type: ignore[attr-defined]
    for r in retries:
        assert 0 <= r.delay <= 0.4  # type: ignore[attr-defined]
        assert r.category == "transient"  # type: ignore[attr-defined]
    assert (tuned.stats.retries, tuned.stats.timeouts, tuned.stats.unavailable) == (2, 0, 0)


# --- checkout: nothing was sent, so a failure there is retried, writes included ----------


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        pytest.param(TimeoutError(), True, id="connect-timeout"),
        pytest.param(ConnectionRefusedError(111, "refused"), True, id="refused"),
        pytest.param(FileNotFoundError(2, "no socket"), True, id="socket-gone"),
        pytest.param(ConnectionResetError(), True, id="reset"),
        pytest.param(sqlalchemy.exc.TimeoutError(), True, id="pool-timeout"),
        pytest.param(asyncpg.exceptions.CannotConnectNowError("starting up"), True, id="57P03"),
        pytest.param(asyncpg.exceptions.AdminShutdownError("bye"), True, id="57P01"),
        pytest.param(asyncpg.exceptions.InvalidPasswordError("no"), False, id="28P01-bad-password"),
        pytest.param(
            asyncpg.exceptions.InvalidCatalogNameError("no"), False, id="3D000-no-database"
        ),
    ],
)
def test_checkout_failures_are_retried_for_writes_too(error: Exception, retryable: bool) -> None:
    classification = classify(CheckoutFailed(error), readonly=False)
    assert classification.retryable is retryable
    assert not classification.outcome_unknown
    if retryable:
        assert classification.category is Category.TRANSIENT
    # Outside a checkout the same TimeoutError or reset would not be retried for a write.
    if isinstance(error, TimeoutError | ConnectionResetError):
        assert not classify(error, readonly=False).retryable


async def test_a_missing_database_is_not_retried(database_url: str) -> None:
    url = make_url(database_url).set(database="reelgraph_no_such_db")
    url_text = url.render_as_string(hide_password=False)
    database = open_database(Settings(database_url=url_text), url_text)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseQueryError) as info:
            await database.read(select_one)
        assert info.value.sqlstate == "3D000"
        assert time.monotonic() - started < 1.0
        assert database.stats.retries == 0
    finally:
        await database.dispose()


def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("database retry")]


async def test_pool_checkout_timeout_is_retried_until_a_connection_frees_up(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        database_url=database_url,
        pool_size=1,
        pool_max_overflow=0,
        pool_timeout=0.2,
        db_retry_base=0.05,
        db_retry_cap=0.1,
        db_deadline=3.0,
    )
    database = open_database(settings, database_url)
    try:
        holder = await database.engine.connect()  # the only connection of the pool
        release = asyncio.get_running_loop().call_later(
            0.5, lambda: asyncio.ensure_future(holder.close())
        )
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="reelgraph.db"):
            assert await database.write(select_one) == 1  # a write: nothing had been sent
        elapsed = time.monotonic() - started
        release.cancel()
        print(f"\npool exhausted for 0.5 s: write succeeded after {elapsed:.3f} s")
        assert 0.5 <= elapsed < 1.5
        retries = retry_records(caplog)
        assert retries
        assert {(r.error, r.checkout) for r in retries} == {("TimeoutError", True)}  # type: ignore[attr-defined]

        holder = await database.engine.connect()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError):
            await database.read(select_one)
        elapsed = time.monotonic() - started
        print(f"pool exhausted for good: DatabaseUnavailableError after {elapsed:.3f} s")
        assert elapsed < 3.0
        await holder.close()
    finally:
        await database.dispose()


# --- the pool heals itself ---------------------------------------------------------------


async def test_pooled_connections_killed_while_idle_are_replaced_without_a_retry(
    db: Database, database_url: str
) -> None:
    await asyncio.gather(*(db.read(select_one) for _ in range(5)))
    admin = await admin_connect(database_url)
    try:
        assert await terminate_app_backends(admin, database_name(database_url)) >= 1
    finally:
        await admin.close()
    await asyncio.sleep(0.1)  # let the backends exit

    assert await asyncio.gather(*(db.read(select_one) for _ in range(5))) == [1] * 5
    assert db.stats.retries == 0  # the checkout ping found them dead and reconnected


async def pings_seen(database_url: str, *, ping_idle: float) -> int:
    """Checkout pings of one pooled connection over: read (fresh), read, read, write.
    asyncpg's query logger sees the ping (`SELECT 1`, a simple query), not the prepared
    statements of the units of work."""
    settings = Settings(database_url=database_url, db_ping_idle=ping_idle, pool_size=1)
    database = open_database(settings, database_url)
    seen: list[str] = []

    async def watch(conn: AsyncConnection) -> None:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        driver.add_query_logger(lambda record: seen.append(record.query))

    async def select_two(conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT 2"))

    try:
        await database.read(watch)  # a fresh connection is never pinged
        for work in (database.read, database.read, database.write):
            await work(select_two)
    finally:
        await database.dispose()
    return seen.count("SELECT 1")


async def test_a_recently_used_connection_is_pinged_only_before_a_write(
    database_url: str,
) -> None:
    """A ping per checkout would add a round trip to every read under load: a read on a
    connection used within `db_ping_idle` skips it (a read is retried if the connection
    turns out lost), a write never does (a write that loses its connection is not)."""
    assert await pings_seen(database_url, ping_idle=60.0) == 1  # the write's
    assert await pings_seen(database_url, ping_idle=0.0) == 3


@contextlib.asynccontextmanager
async def behind_proxy(database_url: str) -> AsyncIterator[tuple[FaultProxy, Database]]:
    """A Database reached through a fault proxy: 0.3 s connect/ping bound, 5 s attempts."""
    async with FaultProxy.for_database(database_url) as proxy:
        url = proxy.database_url(database_url)
        settings = Settings(
            database_url=url,
            db_connect_timeout=0.3,
            db_ping_idle=0.0,  # every checkout pings (the default skips recently used ones)
            db_attempt_timeout=5.0,
            db_deadline=8.0,
            db_retry_base=0.05,
            db_retry_cap=0.1,
        )
        database = open_database(settings, url)
        try:
            yield proxy, database
        finally:
            await database.dispose()


async def test_after_a_partition_the_pool_recovers_within_the_ping_bound(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Pooled connections that went silent cost the ping bound (connect_timeout), not the
    attempt timeout: the ping gives up, the pool drops them all, the read is retried."""
    async with behind_proxy(database_url) as (proxy, database):
        await asyncio.gather(*(database.read(select_one) for _ in range(3)))
        await proxy.blackhole()
        heal = asyncio.get_running_loop().call_later(
            0.5, lambda: asyncio.ensure_future(proxy.pass_through())
        )
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="reelgraph.db"):
            assert await database.read(select_one) == 1
        elapsed = time.monotonic() - started
        heal.cancel()
        print(f"\npartition of 0.5 s: read succeeded after {elapsed:.3f} s (attempt 5 s)")
        assert 0.5 <= elapsed < 1.5
        assert {r.checkout for r in retry_records(caplog)} == {True}  # type: ignore[attr-defined]

        started = time.monotonic()
        assert await asyncio.gather(*(database.read(select_one) for _ in range(3))) == [1] * 3
        assert time.monotonic() - started < 0.3  # no stale connection is left


async def test_a_connect_that_times_out_is_retried(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with behind_proxy(database_url) as (proxy, database):
        await proxy.blackhole()  # before the first connection: the connect hangs
        heal = asyncio.get_running_loop().call_later(
            0.7, lambda: asyncio.ensure_future(proxy.pass_through())
        )
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="reelgraph.db"):
            assert await database.write(select_one) == 1
        elapsed = time.monotonic() - started
        heal.cancel()
        print(f"\nconnects blackholed for 0.7 s: write succeeded after {elapsed:.3f} s")
        assert 0.7 <= elapsed < 2.0
        retries = retry_records(caplog)
        assert len(retries) >= 2
        assert {(r.error, r.checkout) for r in retries} == {("TimeoutError", True)}  # type: ignore[attr-defined]
