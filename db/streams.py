"""Query builders for live streams."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from db.sql import USER_ID, in_array
from db.tables import live_streams
from db.vods import Access


def visible(access: Access) -> ColumnElement[bool]:
    return true() if access.is_admin else live_streams.c.owner_id == access.user_id


@functools.cache
def _by_ids_statement(is_admin: bool) -> Select[Any]:
    statement = select(live_streams).where(in_array(live_streams.c.id, "ids"))
    if not is_admin:
        statement = statement.where(live_streams.c.owner_id == USER_ID)
    return statement


async def streams_by_ids(
    conn: AsyncConnection, access: Access, ids: Sequence[int]
) -> list[Row[Any]]:
    params = {**access.params(), "ids": list(ids)}
    return list((await conn.execute(_by_ids_statement(access.is_admin), params)).all())
