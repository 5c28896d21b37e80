"""Server-wide secrets kept in the database (see tables.server_secrets)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from db.tables import server_secrets


async def server_secret(conn: AsyncConnection, name: str) -> bytes:
    value = (
        await conn.execute(select(server_secrets.c.value).where(server_secrets.c.name == name))
    ).scalar_one()
    return bytes(value)
