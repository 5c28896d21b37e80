"""Query builders for live streams."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Row, Select, any_, bindparam, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from db.tables import live_streams
from db.vods import Access


def visible(access: Access) -> ColumnElement[bool]:
    return true() if access.is_admin else live_streams.c.owner_id == access.user_id


@functools.cache
def _by_statement(column: str, is_admin: bool) -> Select[Any]:
    keys = bindparam("keys", type_=ARRAY(BigInteger()))
    statement = select(live_streams).where(live_streams.c[column] == any_(keys))
    if not is_admin:
        statement = statement.where(live_streams.c.owner_id == bindparam("user_id"))
    return statement


async def _streams_by(
    conn: AsyncConnection, column: str, access: Access, keys: Sequence[int]
) -> list[Row[Any]]:
    params: dict[str, Any] = {"keys": list(keys)}
    if not access.is_admin:
        params["user_id"] = access.user_id
    return list((await conn.execute(_by_statement(column, access.is_admin), params)).all())


async def streams_by_ids(
    conn: AsyncConnection, access: Access, ids: Sequence[int]
) -> list[Row[Any]]:
    return await _streams_by(conn, "id", access, ids)


async def streams_by_vod_ids(
    conn: AsyncConnection, access: Access, vod_ids: Sequence[int]
) -> list[Row[Any]]:
    return await _streams_by(conn, "vod_video_id", access, vod_ids)
