"""Query builders for live streams."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from db.sql import in_array
from db.tables import live_streams
from db.vods import Access


def visible(access: Access) -> ColumnElement[bool]:
    return true() if access.is_admin else live_streams.c.owner_id == access.user_id


async def streams_by_ids(
    conn: AsyncConnection, access: Access, ids: Sequence[int]
) -> list[Row[Any]]:
    result = await conn.execute(
        select(live_streams).where(in_array(live_streams.c.id, ids), visible(access))
    )
    return list(result.all())


async def streams_by_vod_ids(
    conn: AsyncConnection, access: Access, vod_ids: Sequence[int]
) -> list[Row[Any]]:
    result = await conn.execute(
        select(live_streams).where(in_array(live_streams.c.vod_video_id, vod_ids), visible(access))
    )
    return list(result.all())
