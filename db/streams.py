"""Query builders for live streams."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from db.direct import Record, fetch
from db.sql import USER_ID, Access, in_array
from db.tables import live_streams


def visible(is_admin: bool) -> ColumnElement[bool]:
    """Admins: every stream. Others: their own (binds USER_ID: see `Access.params`)."""
    return true() if is_admin else live_streams.c.owner_id == USER_ID


@functools.cache
def _by_ids_statement(is_admin: bool) -> Select[Any]:
    return select(live_streams).where(in_array(live_streams.c.id, "ids"), visible(is_admin))


async def streams_by_ids(conn: AsyncConnection, access: Access, ids: Sequence[int]) -> list[Record]:
    params = {**access.params(), "ids": list(ids)}
    return await fetch(conn, _by_ids_statement(access.is_admin), params)
