"""Query builders for videos: visibility, filters, keyset pages and totalCount strategies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    and_,
    any_,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from db.sql import in_array
from db.tables import live_streams, videos

VodOrderField = Literal["created_at", "title", "duration_seconds"]
TotalCountStrategy = Literal["subquery", "window"]

VOD_COLUMNS = (
    videos.c.id,
    videos.c.owner_id,
    videos.c.title,
    videos.c.slug,
    videos.c.description,
    videos.c.status,
    videos.c.duration_seconds,
    videos.c.width,
    videos.c.height,
    videos.c.thumbnail_url,
    videos.c.created_at,
    videos.c.published_at,
)


@dataclass(frozen=True, slots=True)
class Access:
    """Who is asking: admins see every live row, others what they own."""

    user_id: int
    is_admin: bool


@dataclass(frozen=True, slots=True)
class VodFilter:
    status: str | None = None
    search: str | None = None


@dataclass(frozen=True, slots=True)
class Keyset:
    """A page request: scan in `descending` order, after/before (key, id) bounds."""

    order: VodOrderField
    descending: bool
    limit: int
    after: tuple[Any, int] | None = None
    before: tuple[Any, int] | None = None
    backward: bool = False


@dataclass(frozen=True, slots=True)
class VodPage:
    rows: list[Row[Any]]
    total: int | None


def _streamed_ids(access: Access) -> ColumnElement[Any]:
    """The VODs recorded from the viewer's streams, as one array (an init plan, run once)."""
    streamed = (
        select(func.array_agg(live_streams.c.vod_video_id))
        .where(live_streams.c.owner_id == access.user_id, live_streams.c.vod_video_id.is_not(None))
        .scalar_subquery()
    )
    return func.coalesce(streamed, literal_column("'{}'::bigint[]"))


def visible(access: Access) -> ColumnElement[bool]:
    """Admins: every VOD not deleted. Others: their own, and those recorded from their streams."""
    alive = videos.c.deleted_at.is_(None)
    if access.is_admin:
        return alive
    return and_(
        alive,
        or_(videos.c.owner_id == access.user_id, videos.c.id == any_(_streamed_ids(access))),
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(vod_filter: VodFilter) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [videos.c.deleted_at.is_(None)]
    if vod_filter.status is not None:
        clauses.append(videos.c.status == vod_filter.status)
    if vod_filter.search:
        clauses.append(videos.c.title.ilike(f"%{_escape_like(vod_filter.search)}%", escape="\\"))
    return clauses


def matching(access: Access, vod_filter: VodFilter) -> ColumnElement[bool]:
    return and_(visible(access), *_filtered(vod_filter))


def branches(access: Access, vod_filter: VodFilter) -> list[ColumnElement[bool]]:
    """`matching` split into disjoint conditions that each have an index serving every order.

    An OR of "owned" and "recorded from my stream" makes PostgreSQL walk a global index and
    filter (100 ms on 1M rows for a creator with 1000 VODs); two branches, each walking its
    own index, answer in about a millisecond.
    """
    filtered = _filtered(vod_filter)
    if access.is_admin:
        return [and_(*filtered)]
    return [
        and_(videos.c.owner_id == access.user_id, *filtered),
        and_(
            videos.c.id == any_(_streamed_ids(access)),
            videos.c.owner_id != access.user_id,
            *filtered,
        ),
    ]


def _keyset_predicate(table_c: Any, keyset: Keyset) -> list[ColumnElement[bool]]:
    key = tuple_(table_c[keyset.order], table_c.id)
    clauses: list[ColumnElement[bool]] = []
    if keyset.after is not None:
        bound = tuple_(literal(keyset.after[0], type_=table_c[keyset.order].type), keyset.after[1])
        clauses.append(key < bound if keyset.descending else key > bound)
    if keyset.before is not None:
        bound = tuple_(
            literal(keyset.before[0], type_=table_c[keyset.order].type), keyset.before[1]
        )
        clauses.append(key > bound if keyset.descending else key < bound)
    return clauses


def _ordering(table_c: Any, keyset: Keyset) -> list[Any]:
    # A backward page scans in the opposite direction; the caller reverses the rows.
    scan_desc = keyset.descending != keyset.backward
    columns = (table_c[keyset.order], table_c.id)
    return [c.desc() if scan_desc else c.asc() for c in columns]


def _page_rows(access: Access, vod_filter: VodFilter, keyset: Keyset) -> Select[Any]:
    """The limit+1 rows of the page, in scan order: per branch, then merged."""
    selects = [
        select(*VOD_COLUMNS)
        .where(condition, *_keyset_predicate(videos.c, keyset))
        .order_by(*_ordering(videos.c, keyset))
        .limit(keyset.limit + 1)
        for condition in branches(access, vod_filter)
    ]
    if len(selects) == 1:
        return selects[0]
    merged = union_all(*selects).subquery("merged")
    return (
        select(*(merged.c[c.name] for c in VOD_COLUMNS))
        .order_by(*_ordering(merged.c, keyset))
        .limit(keyset.limit + 1)
    )


def page_statement(
    access: Access,
    vod_filter: VodFilter,
    keyset: Keyset,
    *,
    with_total: bool,
    strategy: TotalCountStrategy = "subquery",
) -> Select[Any]:
    """One statement: the page's limit+1 rows and, if asked, the exact total of matches.

    The total ignores the cursor. `subquery` counts each branch in an uncorrelated scalar
    subquery (an init plan, run once). `window` counts with `count(*) OVER ()` over every
    match before the cursor predicate is applied, then pages. Either way the page is LEFT
    JOINed to a one-row relation, so an empty page still carries its total.
    """
    if not with_total:
        return _page_rows(access, vod_filter, keyset)
    if strategy == "subquery":
        counts = [
            select(func.count()).select_from(videos).where(condition).scalar_subquery()
            for condition in branches(access, vod_filter)
        ]
        total: ColumnElement[Any] = counts[0] if len(counts) == 1 else counts[0] + counts[1]
        page = _page_rows(access, vod_filter, keyset).subquery("page")
    else:
        where = matching(access, vod_filter)
        matches = (
            select(*VOD_COLUMNS, func.count().over().label("total")).where(where).cte("matches")
        )
        total = func.coalesce(select(matches.c.total).limit(1).scalar_subquery(), 0)
        page = (
            select(*(matches.c[c.name] for c in VOD_COLUMNS))
            .where(*_keyset_predicate(matches.c, keyset))
            .order_by(*_ordering(matches.c, keyset))
            .limit(keyset.limit + 1)
            .subquery("page")
        )
    one = select(literal(1).label("one")).subquery("one")
    return (
        select(total.label("total_count"), *(page.c[c.name] for c in VOD_COLUMNS))
        .select_from(one.outerjoin(page, true()))
        .order_by(*_ordering(page.c, keyset))
    )


async def fetch_page(
    conn: AsyncConnection,
    access: Access,
    vod_filter: VodFilter,
    keyset: Keyset,
    *,
    with_total: bool,
    strategy: TotalCountStrategy = "subquery",
) -> VodPage:
    statement = page_statement(access, vod_filter, keyset, with_total=with_total, strategy=strategy)
    rows = list((await conn.execute(statement)).all())
    if not with_total:
        return VodPage(rows=rows, total=None)
    total = int(rows[0].total_count) if rows else 0
    return VodPage(rows=[r for r in rows if r.id is not None], total=total)


async def vods_by_ids(conn: AsyncConnection, access: Access, ids: Sequence[int]) -> list[Row[Any]]:
    result = await conn.execute(
        select(*VOD_COLUMNS).where(in_array(videos.c.id, ids), visible(access))
    )
    return list(result.all())  # type: ignore[arg-type]
