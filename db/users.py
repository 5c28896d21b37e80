"""Users and API tokens."""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    LargeBinary,
    Row,
    Select,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from db.direct import Record, fetch
from db.sql import in_array
from db.tables import api_tokens, users

TOKEN_PREFIX = "rg_"


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@functools.cache
def _user_for_token_statement() -> Select[Any]:
    # Built once: this runs on every authenticated request.
    return (
        select(
            users.c.id,
            users.c.role,
            api_tokens.c.id.label("token_id"),
            (
                api_tokens.c.last_used_at.is_(None)
                | (api_tokens.c.last_used_at < func.now() - text("interval '1 minute'"))
            ).label("stale"),
        )
        .join(api_tokens, api_tokens.c.user_id == users.c.id)
        .where(
            api_tokens.c.token_hash == bindparam("token_hash", type_=LargeBinary()),
            api_tokens.c.revoked_at.is_(None),
        )
    )


async def user_for_token(conn: AsyncConnection, token_hash: bytes) -> Row[Any] | None:
    """The (id, role) of the user of the token with this `hash_token`, or None for an
    unknown or revoked token."""
    result = await conn.execute(_user_for_token_statement(), {"token_hash": token_hash})
    row: Row[Any] | None = result.first()
    return row


async def touch_token(conn: AsyncConnection, token_id: int) -> None:
    """Record use at most once a minute, so reads don't turn into a write per request."""
    await conn.execute(
        update(api_tokens)
        .where(
            api_tokens.c.id == token_id,
            api_tokens.c.last_used_at.is_(None)
            | (api_tokens.c.last_used_at < func.now() - text("interval '1 minute'")),
        )
        .values(last_used_at=func.now())
    )


@functools.cache
def _users_by_ids_statement() -> Select[Any]:
    return select(users).where(in_array(users.c.id, "ids"))


async def users_by_ids(conn: AsyncConnection, ids: Sequence[int]) -> list[Record]:
    return await fetch(conn, _users_by_ids_statement(), {"ids": list(ids)})


async def create_user(
    conn: AsyncConnection, *, username: str, role: str, display_name: str | None = None
) -> int:
    result = await conn.execute(
        insert(users)
        .values(username=username, display_name=display_name or username, role=role)
        .returning(users.c.id)
    )
    return int(result.scalar_one())


async def create_token(conn: AsyncConnection, *, user_id: int, name: str) -> str:
    token = new_token()
    await conn.execute(
        insert(api_tokens).values(user_id=user_id, token_hash=hash_token(token), name=name)
    )
    return token
