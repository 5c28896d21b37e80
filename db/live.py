"""Live stream queries: the bitrate estimator and keyset pages of streams."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    select,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from db.direct import Record, fetch
from db.sql import Access, in_array, pruned
from db.streams import visible
from db.tables import live_stream_segments, live_streams

BITRATE_WINDOW_SECONDS = 30
_MAX_INT32 = 2**31 - 1


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """One stream's live figures, all read by one statement at `measured_at`.

    `bitrate_kbps` is sum(size_bytes) * 8 / span / 1000 over the segments received in the
    30 s before `measured_at` (span = newest minus oldest received_at), rounded; None with
    fewer than two segments or a zero span. `bitrate_updated_at` is the newest segment's
    received_at, and None whenever `bitrate_kbps` is.
    """

    stream_id: int
    status: str
    viewer_count: int
    bitrate_kbps: int | None
    bitrate_updated_at: datetime | None
    measured_at: datetime


@functools.cache
def _health_statement(at_given: bool) -> Select[Any]:
    """One statement for any number of streams (`ids`): a LATERAL aggregate per stream.

    Each aggregate is an index range scan of (stream_id, received_at). The parameter `at`
    (else the server's `now()`) ends the window; segments received after it don't count.
    """
    segments = live_stream_segments
    end: ColumnElement[Any] = (
        bindparam("at", type_=DateTime(timezone=True)) if at_given else func.now()
    )
    start = end - literal_column(f"interval '{BITRATE_WINDOW_SECONDS} seconds'")
    window = (
        select(
            func.count().label("n"),
            func.sum(segments.c.size_bytes).label("total_bytes"),
            func.min(segments.c.received_at).label("oldest"),
            func.max(segments.c.received_at).label("newest"),
        )
        .where(
            segments.c.stream_id == live_streams.c.id,
            segments.c.received_at > start,
            segments.c.received_at <= end,
        )
        .lateral("w")
    )
    measurable = and_(window.c.n >= 2, window.c.newest > window.c.oldest)
    span = func.extract("epoch", window.c.newest - window.c.oldest)
    kbps = func.round(window.c.total_bytes * 8 / span / 1000)
    return (
        select(
            live_streams.c.id,
            live_streams.c.status,
            live_streams.c.viewer_count_current,
            case((measurable, cast(kbps, BigInteger))).label("bitrate_kbps"),
            case((measurable, window.c.newest)).label("bitrate_updated_at"),
            end.label("measured_at"),
        )
        .select_from(live_streams.join(window, true()))
        .where(in_array(live_streams.c.id, "ids"))
    )


async def stream_health(
    conn: AsyncConnection, stream_ids: Sequence[int], *, at: datetime | None = None
) -> dict[int, StreamHealth]:
    """Health of each existing stream in `stream_ids` (visibility is the caller's concern)."""
    statement = _health_statement(at is not None)
    rows = (await conn.execute(statement, {"ids": list(stream_ids), "at": at})).all()
    return {
        int(r.id): StreamHealth(
            stream_id=int(r.id),
            status=r.status,
            viewer_count=int(r.viewer_count_current),
            bitrate_kbps=None if r.bitrate_kbps is None else min(int(r.bitrate_kbps), _MAX_INT32),
            bitrate_updated_at=r.bitrate_updated_at,
            measured_at=r.measured_at,
        )
        for r in rows
    }


@dataclass(frozen=True, slots=True)
class StreamKeyset:
    """A page of streams, newest first by (created_at, id); `backward` scans the other way."""

    limit: int
    after: tuple[datetime, int] | None = None
    before: tuple[datetime, int] | None = None
    backward: bool = False


@functools.cache
def _page_statement(
    is_admin: bool, status: bool, after: bool, before: bool, backward: bool
) -> Select[Any]:
    key = tuple_(live_streams.c.created_at, live_streams.c.id)
    at = DateTime(timezone=True)
    clauses: list[ColumnElement[bool]] = [visible(is_admin)]
    if status:
        clauses.append(live_streams.c.status == bindparam("status"))
    if after:
        bound = tuple_(bindparam("after_at", type_=at), bindparam("after_id", type_=BigInteger()))
        clauses.append(key < bound)
    if before:
        bound = tuple_(bindparam("before_at", type_=at), bindparam("before_id", type_=BigInteger()))
        clauses.append(key > bound)
    columns = (live_streams.c.created_at, live_streams.c.id)
    order = [c.asc() for c in columns] if backward else [c.desc() for c in columns]
    limit = bindparam("limit", type_=Integer())
    return select(live_streams).where(*clauses).order_by(*order).limit(limit)


def page_statement(
    access: Access, keyset: StreamKeyset, *, status: str | None
) -> tuple[Select[Any], dict[str, Any]]:
    """The page's limit+1 rows in scan order, built once per shape; and its parameters."""
    statement = _page_statement(
        access.is_admin,
        status is not None,
        keyset.after is not None,
        keyset.before is not None,
        keyset.backward,
    )
    params = {**access.params(), "limit": keyset.limit + 1, "status": status}
    if keyset.after is not None:
        params["after_at"], params["after_id"] = keyset.after
    if keyset.before is not None:
        params["before_at"], params["before_id"] = keyset.before
    return statement, params


async def fetch_page(
    conn: AsyncConnection,
    access: Access,
    keyset: StreamKeyset,
    *,
    status: str | None,
    columns: frozenset[str] | None = None,
) -> list[Record]:
    """The page's limit+1 rows in scan order (the caller trims and reverses), with the
    `columns` named (all with None)."""
    statement, params = page_statement(access, keyset, status=status)
    return await fetch(conn, pruned(statement, columns), params)
