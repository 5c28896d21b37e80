"""Real faults on a real PostgreSQL, seen through the GraphQL API where a client would see
them: killed backends, a stopped server, a locked table, serialization failures and
deadlocks, a silent or resetting network, a write that loses its connection.

Every test measures the time bounds it claims and prints them (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from app import open_database
from db.embedded import asyncpg_url
from db.engine import CANCEL_GRACE, Database
from db.errors import DatabaseTimeoutError, DatabaseUnavailableError
from db.migrate import upgrade
from settings import Settings
from tests.conftest import Client, make_account, running_app
from tests.conftest import test_settings as settings_for
from tests.db.admin import (
    admin_connect,
    app_backends,
    database_name,
    eventually,
    terminate_app_backends,
)
from tests.factories import insert_vods, vod_values
from tests.faultproxy import FaultProxy

T = TypeVar("T")

VODS = "{ vods(first: 5) { totalCount nodes { id owner { username } } } }"
ROWS = 8
LOCKED = "wait_event_type = 'Lock'"


def fast_failing(url: str, **changes: Any) -> Settings:
    """Short bounds, so that each fault ends in about a second. A checkout may ping a stale
    connection and then open a new one, so 2 x connect timeout stays below the attempt's."""
    values: dict[str, Any] = {
        "db_attempt_timeout": 1.0,
        "db_deadline": 3.0,
        "db_connect_timeout": 0.3,
        "db_ping_idle": 0.0,  # every checkout pings: these faults exercise the ping too
        "db_retry_base": 0.05,
        "db_retry_cap": 0.5,
        "db_lock_timeout": 5.0,  # above the attempt timeout: the attempt timeout fires
    }
    values.update(changes)
    return settings_for(url, **values)


async def timed(awaitable: Awaitable[T]) -> tuple[T, float]:
    started = time.monotonic()
    result = await awaitable
    return result, time.monotonic() - started


async def library(client: Client) -> str:
    """An admin's token and ROWS VODs; the token is used once, so that later requests only
    read (`last_used_at` is written at most once a minute)."""
    db = client.app.state.services.db
    admin = await make_account(db, f"admin_{uuid.uuid4().hex[:8]}", "admin")
    rng = random.Random(1)
    await insert_vods(db, [vod_values(admin.id, rng) for _ in range(ROWS)])
    assert_ok(await client.gql(VODS, token=admin.token))
    return admin.token


def assert_ok(body: dict[str, Any]) -> None:
    assert body.get("errors") is None, body["errors"]
    assert body["data"]["vods"]["totalCount"] == ROWS
    assert all(n["owner"]["username"] for n in body["data"]["vods"]["nodes"])


def codes(body: dict[str, Any]) -> set[str]:
    return {e["extensions"]["code"] for e in body.get("errors") or []}


def database_of(client: Client) -> Database:
    db: Database = client.app.state.services.db
    return db


# --- (1) every backend killed during a burst of reads ------------------------------------


async def test_backends_killed_during_a_burst_of_reads(database_url: str) -> None:
    # Generous attempt timeout: queueing for the pool counts against it, and that is load,
    # not the fault under test.
    settings = settings_for(
        database_url, db_attempt_timeout=10.0, db_deadline=20.0, db_retry_cap=0.2
    )
    name = database_name(database_url)
    async with running_app(settings) as client:
        token = await library(client)
        stats = database_of(client).stats
        admin = await admin_connect(database_url)
        locker = await admin_connect(database_url)
        try:
            # Deterministic: every query of the burst is mid-statement (waiting on a lock)
            # when its backend is terminated.
            await locker.execute("BEGIN; LOCK TABLE videos IN ACCESS EXCLUSIVE MODE")
            burst = [asyncio.ensure_future(timed(client.gql(VODS, token=token))) for _ in range(16)]

            async def all_waiting() -> bool:
                return await app_backends(admin, name, where=LOCKED) == 16

            await eventually(all_waiting, within=5)
            killed = await terminate_app_backends(admin, name)
            killed_at = time.monotonic()
            await locker.execute("ROLLBACK")
            results = await asyncio.gather(*burst)
            recovered = time.monotonic() - killed_at
            for body, _ in results:
                assert_ok(body)
            assert killed >= 16
            assert stats.retries >= 16
            print(
                f"\n(1a) {killed} backends killed mid-statement under 16 reads: all 16 "
                f"answered with data, {stats.retries} retries, last answer {recovered:.3f} s "
                f"after the kill, slowest request {max(t for _, t in results):.3f} s"
            )
            assert recovered < 3.0  # nothing waited for a timeout

            # Kills at random moments of a larger burst: 4 rounds, fewer than max_retries,
            # so no unit of work can run out of retries.
            before = stats.retries

            async def killer() -> int:
                total = 0
                for _ in range(4):
                    await asyncio.sleep(0.03)
                    total += await terminate_app_backends(admin, name)
                return total

            started = time.monotonic()
            kills = asyncio.ensure_future(killer())
            results = await asyncio.gather(
                *(timed(client.gql(VODS, token=token)) for _ in range(40))
            )
            killed = await kills
            elapsed = time.monotonic() - started
            for body, _ in results:
                assert_ok(body)
            print(
                f"(1b) 4 kill rounds ({killed} backends) during 40 concurrent reads: all "
                f"answered with data in {elapsed:.3f} s, {stats.retries - before} retries, "
                f"slowest {max(t for _, t in results):.3f} s"
            )

            slowest = 0.0
            for _ in range(5):
                body, took = await timed(client.gql(VODS, token=token))
                assert_ok(body)
                slowest = max(slowest, took)
            print(f"(1c) the next 5 requests succeeded, slowest {slowest:.3f} s")
            assert slowest < 1.0
            assert stats.timeouts == stats.unavailable == 0
        finally:
            await locker.close()
            await admin.close()


# --- (2) PostgreSQL stopped for several seconds, then started again ----------------------


class ThrowawayServer:
    """An embedded PostgreSQL in a temporary directory that a test may stop and start."""

    def __init__(self) -> None:
        # Short path: the Unix socket lives in it (108 bytes at most).
        self.root = Path(tempfile.mkdtemp(prefix="rg-fault-"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            import pgserver

        self._pgserver: Any = pgserver
        self.server = pgserver.get_server(self.root / "pg", cleanup_mode="stop")  # type: ignore[attr-defined]
        self.url = asyncpg_url(self.server.get_uri())
        self.socket_dir = self.url.split("host=", 1)[1]

    def _pg_ctl(self, *args: str) -> None:
        self._pgserver.pg_ctl(
            ["-w", *args], pgdata=self.server.pgdata, user=self.server.system_user, timeout=30
        )

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl(
            "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start"
        )

    def cleanup(self) -> None:
        try:
            self.server.cleanup()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def throwaway_server() -> Iterator[ThrowawayServer]:
    server = ThrowawayServer()
    try:
        yield server
    finally:
        server.cleanup()


async def test_postgres_stopped_then_started(throwaway_server: ThrowawayServer) -> None:
    url = throwaway_server.url
    engine = create_async_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    settings = fast_failing(url)
    async with running_app(settings) as client:
        token = await library(client)
        stats = database_of(client).stats

        await asyncio.to_thread(throwaway_server.stop)
        stopped_at = time.monotonic()
        answers: list[float] = []
        readiness: list[float] = []
        while time.monotonic() - stopped_at < 3.0:  # several seconds of downtime
            results = await asyncio.gather(
                *(timed(client.gql(VODS, token=token)) for _ in range(4))
            )
            for body, took in results:
                assert codes(body) == {"DATABASE_UNAVAILABLE"}, body
                assert body["data"] is None
                answers.append(took)
            ready, took = await timed(client.http.get("/readyz"))
            assert ready.status_code == 503
            readiness.append(took)
            assert (await client.http.get("/healthz")).text == "ok"  # the process is up
        down_for = time.monotonic() - stopped_at

        await asyncio.to_thread(throwaway_server.start)
        body, first = await timed(client.gql(VODS, token=token))
        assert_ok(body)
        ready, _ = await timed(client.http.get("/readyz"))
        assert ready.status_code == 200
        print(
            f"\n(2) server down {down_for:.1f} s: {len(answers)} requests, every one "
            f"DATABASE_UNAVAILABLE within {max(answers):.3f} s (deadline 3 s); /readyz 503 "
            f"within {max(readiness):.3f} s; first request after restart succeeded in "
            f"{first:.3f} s; {stats.unavailable} unavailable, {stats.retries} retries"
        )
        assert max(answers) < settings.db_deadline
        assert max(readiness) < 0.5
        assert first < 1.0


# --- (3) a locked table: the attempt timeout fires, and nothing is left running ----------


async def test_locked_table_times_out_and_leaves_no_backend(database_url: str) -> None:
    settings = fast_failing(database_url)
    name = database_name(database_url)
    async with running_app(settings) as client:
        token = await library(client)
        admin = await admin_connect(database_url)
        locker = await admin_connect(database_url)
        try:
            await locker.execute("BEGIN; LOCK TABLE videos IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            body = await client.gql(VODS, token=token)
            answered = time.monotonic() - started
            assert codes(body) == {"DATABASE_TIMEOUT"}, body

            async def none_waiting() -> bool:
                return await app_backends(admin, name, where="state = 'active'") == 0

            await eventually(none_waiting, within=3)
            gone = time.monotonic() - started
            print(
                f"\n(3) locked table: DATABASE_TIMEOUT after {answered:.3f} s (attempt "
                f"timeout 1 s, lock_timeout 5 s); no backend running the query "
                f"{gone:.3f} s after the request started (statement_timeout 2 s)"
            )
            assert 1.0 <= answered < 1.0 + 0.5
            assert gone < 2.0  # the client's cancel did it: statement_timeout fires at >= 2 s
            assert database_of(client).stats.timeouts == 1
        finally:
            await locker.execute("ROLLBACK")
            await locker.close()
            await admin.close()
        assert_ok(await client.gql(VODS, token=token))


# --- (4) serialization failures and deadlocks are retried to success ---------------------


@pytest.fixture
async def counters(db: Database) -> Database:
    async def create(conn: AsyncConnection) -> None:
        await conn.execute(text("CREATE TABLE counters (id int PRIMARY KEY, k text, n int)"))
        await conn.execute(text("INSERT INTO counters VALUES (1, 'a', 0), (2, 'b', 0)"))

    await db.write(create)
    return db


async def test_serialization_failure_is_retried_to_success(
    counters: Database, database_url: str
) -> None:
    """Write skew between two SERIALIZABLE transactions: each reads what the other writes."""
    db = counters
    other = await admin_connect(database_url)
    attempts = 0

    async def move(conn: AsyncConnection) -> int:
        nonlocal attempts
        attempts += 1
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"))
        a = (await conn.execute(text("SELECT sum(n) FROM counters WHERE k = 'a'"))).scalar_one()
        if attempts == 1:  # a concurrent transaction reads 'b' and writes 'a', and commits
            async with other.transaction(isolation="serializable"):
                await other.execute("SELECT sum(n) FROM counters WHERE k = 'b'")
                await other.execute("UPDATE counters SET n = n + 1 WHERE k = 'a'")
        await conn.execute(text("UPDATE counters SET n = n + 10 WHERE k = 'b'"))
        return int(a)

    try:
        result, took = await timed(db.write(move))
    finally:
        await other.close()
    print(f"\n(4a) serialization failure: {attempts} attempts, success in {took:.3f} s")
    assert attempts == 2
    assert result == 1  # the retry saw the other transaction's write
    assert db.stats.retries == 1

    async def totals(conn: AsyncConnection) -> list[tuple[str, int]]:
        rows = await conn.execute(text("SELECT k, n FROM counters ORDER BY k"))
        return [(r.k, r.n) for r in rows]

    assert await db.read(totals) == [("a", 1), ("b", 10)]


async def test_deadlock_is_retried_to_success(counters: Database, database_url: str) -> None:
    """Two sessions lock rows 1 and 2 in opposite order; ours is made the victim."""
    db = counters
    other = await admin_connect(database_url)
    watcher = await admin_connect(database_url)
    attempts = 0
    other_done: asyncio.Future[None] | None = None

    async def other_session() -> None:
        async with other.transaction():
            await other.execute("SET LOCAL deadlock_timeout = '10s'")
            await other.execute("UPDATE counters SET n = n + 1 WHERE id = 2")
            holding.set_result(None)
            await go.wait()
            await other.execute("UPDATE counters SET n = n + 1 WHERE id = 1")  # waits on us

    holding: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    go = asyncio.Event()

    async def both_rows(conn: AsyncConnection) -> None:
        nonlocal attempts, other_done
        attempts += 1
        await conn.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
        await conn.execute(text("UPDATE counters SET n = n + 100 WHERE id = 1"))
        if attempts == 1:
            other_done = asyncio.ensure_future(other_session())
            await holding
            go.set()

            async def other_waits() -> bool:
                blocked = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name = 'reelgraph-admin' AND datname = $1",
                    database_name(database_url),
                )
                return int(blocked) == 1

            await eventually(other_waits, within=5)
        await conn.execute(text("UPDATE counters SET n = n + 100 WHERE id = 2"))  # deadlock

    try:
        _, took = await timed(db.write(both_rows))
        assert other_done is not None
        await other_done
    finally:
        await other.close()
        await watcher.close()
    print(f"\n(4b) deadlock: {attempts} attempts, success in {took:.3f} s")
    assert attempts == 2
    assert db.stats.retries == 1

    async def totals(conn: AsyncConnection) -> list[int]:
        return [r.n for r in await conn.execute(text("SELECT n FROM counters ORDER BY id"))]

    assert await db.read(totals) == [101, 101]


# --- (5) a network that resets or goes silent --------------------------------------------


@contextlib.asynccontextmanager
async def proxied_app(
    database_url: str, **changes: Any
) -> AsyncIterator[tuple[FaultProxy, Client]]:
    async with FaultProxy.for_database(database_url) as proxy:
        settings = fast_failing(proxy.database_url(database_url), **changes)
        async with running_app(settings) as client:
            yield proxy, client


async def test_reset_mid_query_is_retried(database_url: str) -> None:
    name = database_name(database_url)
    async with proxied_app(database_url, db_attempt_timeout=3.0, db_deadline=6.0) as (
        proxy,
        client,
    ):
        token = await library(client)
        admin = await admin_connect(database_url)
        locker = await admin_connect(database_url)
        try:
            await locker.execute("BEGIN; LOCK TABLE videos IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            request = asyncio.ensure_future(client.gql(VODS, token=token))

            async def waiting() -> bool:
                return await app_backends(admin, name, where=LOCKED) == 1

            await eventually(waiting, within=3)
            reset = await proxy.reset_all()
            await locker.execute("ROLLBACK")
            body = await request
            took = time.monotonic() - started
        finally:
            await locker.close()
            await admin.close()
        assert_ok(body)
        retries = database_of(client).stats.retries
        print(
            f"\n(5a) {reset} connections reset mid-query: the read was retried "
            f"({retries} retries) and answered with data in {took:.3f} s"
        )
        assert reset >= 1
        assert retries >= 1
        assert took < 2.0


async def test_blackhole_ends_within_the_deadline_and_recovers(database_url: str) -> None:
    async with proxied_app(database_url) as (proxy, client):
        token = await library(client)
        await proxy.blackhole()
        results = await asyncio.gather(*(timed(client.gql(VODS, token=token)) for _ in range(3)))
        ready, ready_took = await timed(client.http.get("/readyz"))
        for body, _ in results:
            assert codes(body) <= {"DATABASE_TIMEOUT", "DATABASE_UNAVAILABLE"}, body
            assert codes(body)
        assert ready.status_code == 503
        slowest = max(t for _, t in results)

        await proxy.pass_through()
        body, recovered = await timed(client.gql(VODS, token=token))
        assert_ok(body)
        print(
            f"\n(5b) blackhole: 3 requests ended with "
            f"{sorted(c for body, _ in results for c in codes(body))} within "
            f"{slowest:.3f} s (deadline 3 s); /readyz 503 in {ready_took:.3f} s; after "
            f"the network healed the first request succeeded in {recovered:.3f} s"
        )
        # The deadline stops retries and clips the last attempt; what remains is the
        # cancellation of a pending connect and the GraphQL response (milliseconds).
        assert slowest < 3.0 + 0.5
        assert ready_took < 2.0 + 0.5
        assert recovered < 1.0  # a stale connection costs the ping bound (0.3 s) at most


async def test_statement_timeout_stops_a_query_whose_cancel_was_lost(database_url: str) -> None:
    """The network goes silent mid-query: the client gives up at the attempt timeout, its
    CancelRequest cannot arrive, and the server's statement_timeout stops the query."""
    tag = f"lost_cancel_{uuid.uuid4().hex[:8]}"
    name = database_name(database_url)
    async with FaultProxy.for_database(database_url) as proxy:
        url = proxy.database_url(database_url)
        db = open_database(fast_failing(url), url)
        admin = await admin_connect(database_url)
        try:

            async def sleepy(conn: AsyncConnection) -> None:
                await conn.execute(text(f"SELECT pg_sleep(30) /* {tag} */"))

            # Inside pg_sleep, not merely parsed: the statement really reached the server.
            running = f"wait_event = 'PgSleep' AND query LIKE '%{tag}%'"
            started = time.monotonic()
            attempt = asyncio.ensure_future(db.read(sleepy))

            async def is_running() -> bool:
                return await app_backends(admin, name, where=running) == 1

            await eventually(is_running, within=2)
            await proxy.blackhole()
            with pytest.raises(DatabaseTimeoutError) as info:
                await attempt
            gave_up = time.monotonic() - started
            still_running = await app_backends(admin, name, where=running)

            async def stopped() -> bool:
                return await app_backends(admin, name, where=running) == 0

            await eventually(stopped, within=3)
            stopped_after = time.monotonic() - started
        finally:
            await admin.close()
            await db.dispose()
    print(
        f"\n(5c) blackhole mid-query: DatabaseTimeoutError after {gave_up:.3f} s (attempt "
        f"1 s + cancel grace {CANCEL_GRACE} s); the query was still running then and the "
        f"server's statement_timeout (2 s) stopped it at {stopped_after:.3f} s"
    )
    assert info.value.kind == "attempt"
    assert 1.0 <= gave_up < 1.0 + CANCEL_GRACE + 0.4
    assert still_running == 1
    assert 2.0 <= stopped_after < 3.0


# --- a write that loses its connection mid-statement is not retried ----------------------


async def test_write_lost_mid_statement_is_not_retried(db: Database, database_url: str) -> None:
    tag = f"lost_write_{uuid.uuid4().hex[:8]}"
    name = database_name(database_url)
    admin = await admin_connect(database_url)
    calls = 0

    async def insert_then_sleep(conn: AsyncConnection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute(
            text("INSERT INTO users (username, display_name, role) VALUES (:u, :u, 'viewer')"),
            {"u": tag},
        )
        await conn.execute(text(f"SELECT pg_sleep(30) /* {tag} */"))

    async def kill_when_sleeping() -> None:
        async def sleeping() -> bool:
            where = f"wait_event = 'PgSleep' AND query LIKE '%{tag}%'"
            return await app_backends(admin, name, where=where) == 1

        await eventually(sleeping, within=5)
        await terminate_app_backends(admin, name)

    try:
        killer = asyncio.ensure_future(kill_when_sleeping())
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError) as info:
            await db.write(insert_then_sleep)
        took = time.monotonic() - started
        await killer
        committed = await admin.fetchval("SELECT count(*) FROM users WHERE username = $1", tag)
    finally:
        await admin.close()
    print(
        f"\n(6) write lost mid-statement: DatabaseUnavailableError(outcome_unknown="
        f"{info.value.outcome_unknown}, sqlstate {info.value.last_sqlstate}) after "
        f"{info.value.attempts} attempt in {took:.3f} s; not retried"
    )
    assert calls == 1
    assert info.value.attempts == 1
    assert info.value.outcome_unknown
    assert committed == 0  # this time the server rolled it back; the client cannot know
    assert db.stats.retries == 0


async def test_refused_connections_reach_the_client_as_database_unavailable(
    database_url: str,
) -> None:
    async with proxied_app(database_url) as (proxy, client):
        token = await library(client)
        await proxy.refuse()
        await proxy.reset_all()
        body, took = await timed(client.gql(VODS, token=token))
    assert codes(body) == {"DATABASE_UNAVAILABLE"}, body
    error = body["errors"][0]
    assert error["message"] == "The database is unavailable; try again shortly."
    assert error["extensions"]["requestId"]
    print(f"\n(7) connections refused: DATABASE_UNAVAILABLE in {took:.3f} s (deadline 3 s)")
    assert took < 3.0
