"""Query builders for live chat: keyset pages, idempotent sends, soft deletes, NOTIFY.

Every page is served by the partial index `chat_messages_stream_live_idx` (stream_id,
id DESC) WHERE deleted_at IS NULL: newest first is a forward index scan, a backward page
(`last`/`before`) a backward one; never a sort, never a count.

Why `stream_id = ANY(ARRAY[$1])` and `ORDER BY stream_id, id DESC` instead of the obvious
`stream_id = $1 ... ORDER BY id DESC`: with a plain equality PostgreSQL drops stream_id
from the sort key, and then the primary key also delivers `id DESC`. With a cursor
(`id < $2`) its generic plan prefers walking the primary key and filtering on stream_id,
which reads every newer message of every other stream first: millions of rows for a
quiet stream next to a busy one. Spelled this way, only the partial index yields the
order (anything else needs a sort), so every plan, custom or generic, walks it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Row,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal_column,
    null,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import Label
from sqlalchemy.sql.selectable import CompoundSelect

from db.direct import Record, fetch
from db.sql import Access, in_array, pruned
from db.streams import visible as stream_visible
from db.tables import chat_messages, live_streams, users

CHANNEL = "chat"

CHAT_COLUMNS = (
    chat_messages.c.id,
    chat_messages.c.stream_id,
    chat_messages.c.user_id,
    chat_messages.c.body,
    chat_messages.c.created_at,
)


@dataclass(frozen=True, slots=True)
class ChatKeyset:
    """A page of one stream's chat, newest first: `after`/`before` are message ids."""

    stream_id: int
    limit: int
    after: int | None = None
    before: int | None = None
    backward: bool = False


# Every message row also carries its author (`author__*`): one statement per page.
AUTHOR_PREFIX = "author__"
_STREAM_ID = bindparam("stream_id", type_=BigInteger())


def _with_author(source: Any, user_id: Any) -> tuple[list[Any], Any]:
    """The author columns (`author__*`) and `source` outer-joined to the author."""
    author = users.alias("author")
    columns = [c.label(AUTHOR_PREFIX + c.name) for c in author.c]
    return columns, source.outerjoin(author, author.c.id == user_id)


def _in_stream(*, newest_first: bool) -> tuple[ColumnElement[bool], list[Any]]:
    """The stream's live messages and their order, shaped for the partial index (above)."""
    m = chat_messages.c
    where = and_(in_array(m.stream_id, "stream_ids"), m.deleted_at.is_(None))
    if newest_first:  # the index's own order: a forward scan
        return where, [m.stream_id.asc(), m.id.desc()]
    return where, [m.stream_id.desc(), m.id.asc()]  # a backward scan


def _stream_visible(is_admin: bool) -> ColumnElement[bool]:
    """Uncorrelated, so PostgreSQL checks it once (a one-time filter), not per row."""
    if is_admin:
        return true()
    return exists().where(live_streams.c.id == _STREAM_ID, stream_visible(is_admin))


# One statement per shape and page size (2 to 101 rows): clients use few sizes.
@functools.lru_cache(maxsize=256)
def _page_statement(
    is_admin: bool, backward: bool, after: bool, before: bool, limit: int
) -> Select[Any]:
    m = chat_messages.c
    in_stream, order = _in_stream(newest_first=not backward)
    clauses = [in_stream, _stream_visible(is_admin)]
    older = m.id < bindparam("after", type_=BigInteger())
    newer = m.id > bindparam("before", type_=BigInteger())
    # The bound the scan starts from goes into the scan; the other one filters its rows.
    if backward:
        start, stop = (newer if before else None), after
    else:
        start, stop = (older if after else None), before
    if start is not None:
        clauses.append(start)
    # The LIMIT is written into the statement (an int, never text from a client): bound
    # as `LIMIT $n`, PostgreSQL cannot cost the generic plan (it assumes a tenth of the
    # stream) and plans every execution anew, about 0.1 ms of its CPU each time.
    rows = literal_column(str(int(limit)), Integer)
    scan = select(*CHAT_COLUMNS).where(*clauses).order_by(*order).limit(rows).subquery("scan")
    ordered = [
        scan.c.stream_id.desc() if backward else scan.c.stream_id.asc(),
        scan.c.id.asc() if backward else scan.c.id.desc(),
    ]
    columns, source = _with_author(scan, scan.c.user_id)
    statement = select(*scan.c, *columns).select_from(source).order_by(*ordered)
    if stop:
        bound = bindparam("after" if backward else "before", type_=BigInteger())
        statement = statement.where(scan.c.id < bound if backward else scan.c.id > bound)
    return statement


def page_statement(access: Access, keyset: ChatKeyset) -> tuple[Select[Any], dict[str, Any]]:
    """The limit+1 rows of the page in scan order (the caller reverses a backward page),
    each with its author; and the statement's parameters.

    Only the cursor the scan starts from goes into the index scan. The other one (`before`
    on a forward page, `after` on a backward one) is applied to the limit+1 rows outside:
    the rows it keeps are a prefix of the scan, so the result is the same, and the scan
    keeps a single open end, which only the partial index can serve without a sort.
    """
    return _page_statement(*_shape(access, keyset)), _params(access, keyset)


def _shape(access: Access, keyset: ChatKeyset) -> tuple[bool, bool, bool, bool, int]:
    after, before = keyset.after is not None, keyset.before is not None
    return access.is_admin, keyset.backward, after, before, keyset.limit + 1


def _params(access: Access, keyset: ChatKeyset) -> dict[str, Any]:
    return {
        **access.params(),
        "stream_ids": [keyset.stream_id],
        "stream_id": keyset.stream_id,
        "after": keyset.after,
        "before": keyset.before,
    }


async def fetch_page(
    conn: AsyncConnection,
    access: Access,
    keyset: ChatKeyset,
    columns: frozenset[str] | None = None,
) -> list[Record]:
    """The page's rows with the `columns` named (all with None)."""
    statement, params = page_statement(access, keyset)
    return await fetch(conn, pruned(statement, columns), params)


@functools.lru_cache(maxsize=256)
def _stream_and_page_statement(
    is_admin: bool,
    backward: bool,
    after: bool,
    before: bool,
    limit: int,
    columns: frozenset[str] | None,
) -> CompoundSelect[Any]:
    page_rows = _page_statement(is_admin, backward, after, before, limit)
    page = pruned(page_rows, columns).subquery("page")
    table = live_streams.name
    # The stream as one column of its row type: a page row carries one NULL for it, not
    # one per stream column (ten NULLs on each of 51 rows cost asyncpg about 25 µs).
    stream: Label[Any] = literal_column(table).label("stream")
    no_stream: Label[Any] = literal_column(f"CAST(NULL AS {table})").label("stream")
    no_message = [null().cast(c.type).label(c.key) for c in page.c]
    head = (
        select(literal_column("0", Integer).label("part"), *no_message, stream)
        .select_from(live_streams)
        .where(live_streams.c.id == _STREAM_ID, stream_visible(is_admin))
    )
    rows = select(literal_column("1", Integer).label("part"), *page.c, no_stream)
    both = union_all(head, rows)
    order = both.selected_columns.id.asc() if backward else both.selected_columns.id.desc()
    return both.order_by(both.selected_columns.part, order)


def stream_and_page_statement(
    access: Access, keyset: ChatKeyset, columns: frozenset[str] | None = None
) -> tuple[CompoundSelect[Any], dict[str, Any]]:
    """One statement for a stream and a page of its chat: first the stream's row, if the
    viewer may see it (`part` 0; the row in its one column `stream`, of the table's row
    type, which asyncpg returns as a record), then the page's rows (`part` 1) as
    `page_statement` returns them, in the same order; none for a stream not seen. A
    second statement would cost a round trip: most of what a small read costs."""
    statement = _stream_and_page_statement(*_shape(access, keyset), columns)
    return statement, _params(access, keyset)


async def fetch_stream_and_page(
    conn: AsyncConnection,
    access: Access,
    keyset: ChatKeyset,
    columns: frozenset[str] | None = None,
) -> list[Record]:
    statement, params = stream_and_page_statement(access, keyset, columns)
    return await fetch(conn, statement, params)


@functools.cache
def _by_ids_statement(is_admin: bool) -> Select[Any]:
    columns, source = _with_author(
        chat_messages.join(live_streams, live_streams.c.id == chat_messages.c.stream_id),
        chat_messages.c.user_id,
    )
    statement = select(*CHAT_COLUMNS, *columns).select_from(source)
    return statement.where(
        in_array(chat_messages.c.id, "ids"),
        chat_messages.c.deleted_at.is_(None),
        stream_visible(is_admin),
    )


async def messages_by_ids(
    conn: AsyncConnection, access: Access, ids: Sequence[int]
) -> list[Record]:
    """Live (not deleted) messages of streams the viewer may see, with their authors."""
    params = {**access.params(), "ids": list(ids)}
    return await fetch(conn, _by_ids_statement(access.is_admin), params)


async def stream_for_sending(
    conn: AsyncConnection, access: Access, stream_id: int
) -> Row[Any] | None:
    """(id, status) of the stream if the sender may see it."""
    statement: Select[Any] = select(live_streams.c.id, live_streams.c.status).where(
        live_streams.c.id == stream_id, stream_visible(access.is_admin)
    )
    row: Row[Any] | None = (await conn.execute(statement, access.params())).first()
    return row


async def insert_message(
    conn: AsyncConnection, *, stream_id: int, user_id: int, body: str, client_mutation_id: str
) -> Row[Any] | None:
    """Insert and NOTIFY in one statement; None when (user, clientMutationId) exists.

    A concurrent identical insert waits on the unique index for the first one to commit,
    then does nothing; the NOTIFY is part of the transaction, so it is delivered on commit.
    """
    inserted = (
        pg_insert(chat_messages)
        .values(
            stream_id=stream_id, user_id=user_id, body=body, client_mutation_id=client_mutation_id
        )
        .on_conflict_do_nothing(index_elements=["user_id", "client_mutation_id"])
        .returning(*CHAT_COLUMNS)
        .cte("inserted")
    )
    payload = func.json_build_object(
        literal_column("'stream_id'"),
        inserted.c.stream_id,
        literal_column("'message_id'"),
        inserted.c.id,
    )
    columns, source = _with_author(inserted, inserted.c.user_id)
    statement: Select[Any] = select(
        *(inserted.c[c.name] for c in CHAT_COLUMNS),
        *columns,
        func.pg_notify(CHANNEL, cast(payload, Text)).label("notified"),
    ).select_from(source)
    row: Row[Any] | None = (await conn.execute(statement)).first()
    return row


async def message_by_client_id(
    conn: AsyncConnection, *, user_id: int, client_mutation_id: str
) -> Row[Any] | None:
    """The message a user already sent under this clientMutationId (deleted or not)."""
    columns, source = _with_author(chat_messages, chat_messages.c.user_id)
    statement: Select[Any] = (
        select(*CHAT_COLUMNS, *columns, chat_messages.c.deleted_at)
        .select_from(source)
        .where(
            chat_messages.c.user_id == user_id,
            chat_messages.c.client_mutation_id == client_mutation_id,
        )
    )
    row: Row[Any] | None = (await conn.execute(statement)).first()
    return row


async def deletable_message(
    conn: AsyncConnection, access: Access, message_id: int
) -> Row[Any] | None:
    """(id, deleted_at) if the caller may delete it: owner of its stream, or admin."""
    statement: Select[Any] = (
        select(chat_messages.c.id, chat_messages.c.deleted_at)
        .join(live_streams, live_streams.c.id == chat_messages.c.stream_id)
        .where(chat_messages.c.id == message_id, stream_visible(access.is_admin))
    )
    row: Row[Any] | None = (await conn.execute(statement, access.params())).first()
    return row


async def soft_delete(conn: AsyncConnection, *, message_id: int, deleted_by: int) -> None:
    """Idempotent: a message already deleted keeps its first deletion time and author."""
    await conn.execute(
        update(chat_messages)
        .where(chat_messages.c.id == message_id, chat_messages.c.deleted_at.is_(None))
        .values(deleted_at=func.now(), deleted_by_id=deleted_by)
    )


async def latest_message_id(conn: AsyncConnection, stream_id: int) -> int | None:
    """The newest live message of a stream (one index probe)."""
    in_stream, order = _in_stream(newest_first=True)
    result = await conn.execute(
        select(chat_messages.c.id).where(in_stream).order_by(*order).limit(1),
        {"stream_ids": [stream_id]},
    )
    found = result.scalar()
    return None if found is None else int(found)


async def message_ids_after(
    conn: AsyncConnection, *, stream_id: int, after: int, limit: int
) -> list[int]:
    """Ids of live messages newer than `after`, oldest first (catch-up after a gap)."""
    in_stream, order = _in_stream(newest_first=False)
    result = await conn.execute(
        select(chat_messages.c.id)
        .where(in_stream, chat_messages.c.id > after)
        .order_by(*order)
        .limit(limit),
        {"stream_ids": [stream_id]},
    )
    return [int(i) for i in result.scalars()]
