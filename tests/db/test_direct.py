"""db/direct.py: statements run on asyncpg directly give SQLAlchemy's rows, fire its
statement listeners, and leave no broken connection behind.

The fault tests (tests/db/test_faults.py) reach `fetch` too: every `vods` page is read
with it, under killed backends, locked tables, resets and a silent network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Float, bindparam, event, func, literal, select, text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from app import open_database
from db import chat, live, vods
from db.direct import Record, compile_statement, fetch, record_class
from db.engine import CANCEL_GRACE, Database
from db.errors import DatabaseTimeoutError
from db.seed import SeedCounts, seed
from db.sql import Access
from db.tables import chat_messages, videos
from tests import conftest
from tests.db.admin import admin_connect, app_backends, database_name, eventually

ADMIN = Access(user_id=0, is_admin=True)


async def statements(db: Database) -> list[tuple[Any, dict[str, Any]]]:
    """The hot statements, with parameters that find rows in the seeded database."""
    found = await db.read(
        lambda conn: conn.execute(
            select(
                func.min(chat_messages.c.stream_id).label("stream_id"),
                select(func.min(videos.c.owner_id)).scalar_subquery().label("owner_id"),
                select(func.array_agg(videos.c.id)).scalar_subquery().label("vod_ids"),
            )
        )
    )
    stream_id, owner_id, vod_ids = found.one()
    creator = Access(user_id=owner_id, is_admin=False)
    return [
        vods.page_statement(
            ADMIN, vods.VodFilter(), vods.Keyset("created_at", True, 5), with_total=True
        ),
        vods.page_statement(
            creator, vods.VodFilter(), vods.Keyset("title", False, 5), with_total=False
        ),
        (vods._by_ids_statement(False), {"ids": [*vod_ids, -1], "user_id": owner_id}),
        chat.page_statement(ADMIN, chat.ChatKeyset(stream_id=stream_id, limit=5)),
        chat.stream_and_page_statement(ADMIN, chat.ChatKeyset(stream_id=stream_id, limit=5)),
        live.page_statement(ADMIN, live.StreamKeyset(limit=5), status=None),
        live.page_statement(
            ADMIN, live.StreamKeyset(limit=5, after=(datetime.now(UTC), 10**9)), status=None
        ),
    ]


async def test_rows_are_sqlalchemys_rows(db: Database) -> None:
    await seed(db, SeedCounts(users=3, vods=20, streams=3, messages=20))
    for statement, params in await statements(db):

        async def both(
            conn: AsyncConnection, statement: Any = statement, params: Any = params
        ) -> tuple[list[Any], list[Record]]:
            expected = list((await conn.execute(statement, params)).all())
            return expected, await fetch(conn, statement, params)

        expected, found = await db.read(both)
        assert expected, statement
        assert [tuple(r) for r in found] == [tuple(r) for r in expected]
        keys = list(expected[0]._mapping)
        assert list(found[0].keys()) == keys
        for key in keys:  # attribute access, as on SQLAlchemy's rows
            assert getattr(found[0], key) == getattr(expected[0], key)
            assert isinstance(getattr(type(found[0]), key), property)  # read in C
    with pytest.raises(AttributeError):
        _ = found[0].no_such_column


async def test_a_connection_invalidated_in_a_unit_of_work_reconnects_for_the_next_fetch(
    db: Database,
) -> None:
    statement = select(literal(1).label("one"))

    async def work(conn: AsyncConnection) -> list[Record]:
        first = await fetch(conn, statement, {})
        await conn.invalidate()
        return first + await fetch(conn, statement, {})

    assert [row.one for row in await db.read(work)] == [1, 1]


async def test_hot_statements_keep_their_generic_plan(db: Database) -> None:
    """PostgreSQL keeps each hot statement's generic plan after the first five runs of
    the prepared statement, rather than planning every run (as a bound `LIMIT $n` made it
    do for the chat page, whose LIMIT is now written into the statement)."""
    await seed(db, SeedCounts(users=3, vods=20, streams=3, messages=20))
    for statement, params in await statements(db):

        async def run(
            conn: AsyncConnection, statement: Any = statement, params: Any = params
        ) -> Any:
            for _ in range(8):
                await fetch(conn, statement, params)
            found = await conn.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                    "WHERE statement = :sql"
                ),
                {"sql": compile_statement(statement, conn.dialect).sql},
            )
            return found.one()

        generic, custom = await db.read(run)
        assert generic >= 3 and custom <= 5, (statement, generic, custom)


async def test_record_classes_keep_records_meaning(db: Database) -> None:
    statement = select(
        literal(1).label("id"), literal("t").label("title"), literal(3).label("keys")
    )
    (row,) = await db.read(lambda conn: fetch(conn, statement, {}))
    assert (row.id, row.title, row["keys"], list(row.keys())) == (
        1,
        "t",
        3,
        ["id", "title", "keys"],
    )
    assert record_class(["id", "id"]) is Record  # duplicate names: read by name
    with pytest.raises(AttributeError):
        _ = row.missing


def test_statements_it_cannot_run_exactly_are_refused() -> None:
    dialect = asyncpg_dialect()  # type: ignore[no-untyped-call]
    with pytest.raises(ValueError, match="result processor"):
        compile_statement(select(literal(1.5, Float())), dialect)
    with pytest.raises(ValueError, match="execution time"):
        compile_statement(
            select(videos.c.id).where(videos.c.id.in_(bindparam("ids", expanding=True))), dialect
        )


async def test_statement_listeners_and_the_slow_query_log_see_it(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = open_database(conftest.test_settings(database_url, db_slow_query=0.1), database_url)
    seen = conftest.StatementLog()
    event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
    statement = select(func.pg_sleep(0.2).label("slept"), literal(7).label("seven"))
    try:
        with caplog.at_level(logging.WARNING, logger="reelgraph.db"):
            rows = await database.read(lambda conn: fetch(conn, statement, {}))
    finally:
        await database.dispose()
    assert rows[0].seven == 7
    assert len(seen.statements) == 1 and "pg_sleep" in seen.statements[0]
    slow = [r for r in caplog.records if r.getMessage().startswith("slow query")]
    assert len(slow) == 1 and "pg_sleep" in slow[0].statement  # type: ignore[attr-defined]


@pytest.fixture
async def impatient(database_url: str) -> AsyncIterator[Database]:
    settings = conftest.test_settings(
        database_url, db_attempt_timeout=0.3, db_deadline=1.0, pool_size=1, pool_max_overflow=0
    )
    database = open_database(settings, database_url)
    yield database
    await database.dispose()


async def test_a_timed_out_statement_is_cancelled_and_its_connection_replaced(
    impatient: Database, database_url: str
) -> None:
    before = await impatient.read(lambda conn: fetch(conn, select(func.pg_backend_pid()), {}))
    started = time.monotonic()
    with pytest.raises(DatabaseTimeoutError):
        await impatient.read(lambda conn: fetch(conn, select(func.pg_sleep(5)), {}))
    assert time.monotonic() - started < 0.3 + CANCEL_GRACE + 0.2  # the attempt, the cancel
    admin = await admin_connect(database_url)
    try:

        async def none_sleeping() -> bool:
            where = "query LIKE '%pg_sleep%' AND state = 'active'"
            return await app_backends(admin, database_name(database_url), where=where) == 0

        await eventually(none_sleeping, within=1.5)
    finally:
        await admin.close()
    # The one pooled connection was replaced: a new backend answers.
    after = await impatient.read(lambda conn: fetch(conn, select(func.pg_backend_pid()), {}))
    assert after[0][0] != before[0][0]
