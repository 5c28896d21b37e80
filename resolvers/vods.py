"""VOD lists and lookups: arguments in, rows out."""

from __future__ import annotations

import functools
from typing import Any

from db import vods as vod_queries
from db.sql import DbRow
from db.tables import VIDEO_STATUSES
from db.vods import Keyset, VodFilter, VodOrderField
from resolvers.context import Context
from resolvers.errors import BadUserInput
from resolvers.inputs import text_argument
from resolvers.pagination import (
    Page,
    page_request,
    pk_from_key,
    timestamp_from_key,
    timestamp_key,
    trim,
)

DEFAULT_PAGE = 20
MAX_SEARCH = 200


def _key_out(order: VodOrderField, value: Any) -> Any:
    return timestamp_key(value) if order == "created_at" else value


def _key_in(order: VodOrderField, key: list[Any]) -> tuple[Any, int]:
    if len(key) != 2:
        raise ValueError
    value, pk = key
    if order == "created_at":
        return timestamp_from_key(value), pk_from_key(pk)
    if order == "duration_seconds":
        if type(value) is not int or not 0 <= value < 2**31:
            raise ValueError
    elif not isinstance(value, str):
        raise ValueError
    return value, pk_from_key(pk)


async def vods(
    ctx: Context,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    status: str | None,
    search: str | None,
    order: VodOrderField,
    descending: bool,
    with_total: bool,
    columns: frozenset[str] | None = None,
    cursors: bool = True,
) -> Page[DbRow]:
    """A page of VODs; its rows hold the `columns` named (all with None), their ids and,
    if its `cursors` are read, their keys."""
    request = page_request(first=first, after=after, last=last, before=before, default=DEFAULT_PAGE)
    if status is not None and status not in VIDEO_STATUSES:
        raise BadUserInput(f"Unknown status {status!r}.", argument="filter.status")
    if search is not None:
        text_argument(search, argument="filter.search", max_length=MAX_SEARCH)
    kind = f"vod:{order}:{'desc' if descending else 'asc'}"
    codec = ctx.services.cursors
    parse = functools.partial(_key_in, order)
    keyset = Keyset(
        order=order,
        descending=descending,
        limit=request.limit,
        after=codec.bound(after, kind, argument="after", parse=parse),
        before=codec.bound(before, kind, argument="before", parse=parse),
        backward=request.backward,
    )
    access = await ctx.access()
    result = await ctx.db.read(
        lambda conn: vod_queries.fetch_page(
            conn,
            access,
            VodFilter(status=status, search=search or None),
            keyset,
            with_total=with_total,
            strategy=ctx.services.total_count_strategy,
            columns=columns if columns is None or not cursors else columns | {order},
        )
    )

    def cursor_of(row: DbRow) -> str:
        return codec.encode(kind, [_key_out(order, getattr(row, order)), row.id])

    return trim(result.rows, request, cursor_of, total=result.total)
