"""Per-request DataLoaders: every nested object is fetched in one batch per field."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Row

from db import chat as chat_queries
from db import streams as stream_queries
from db import users as user_queries
from db import vods as vod_queries
from resolvers.context import Context


def _by_key(
    rows: Sequence[Row[Any]], keys: Sequence[int], key: Callable[[Row[Any]], int]
) -> list[Row[Any] | None]:
    found = {key(r): r for r in rows}
    return [found.get(k) for k in keys]


def _vod_loader(ctx: Context) -> Any:
    async def load(ids: list[int]) -> list[Row[Any] | None]:
        access = await ctx.access()
        rows = await ctx.db.read(lambda conn: vod_queries.vods_by_ids(conn, access, ids))
        return _by_key(rows, ids, lambda r: r.id)

    return load


def _user_loader(ctx: Context) -> Any:
    async def load(ids: list[int]) -> list[Row[Any] | None]:
        rows = await ctx.db.read(lambda conn: user_queries.users_by_ids(conn, ids))
        return _by_key(rows, ids, lambda r: r.id)

    return load


def _stream_loader(ctx: Context) -> Any:
    async def load(ids: list[int]) -> list[Row[Any] | None]:
        access = await ctx.access()
        rows = await ctx.db.read(lambda conn: stream_queries.streams_by_ids(conn, access, ids))
        return _by_key(rows, ids, lambda r: r.id)

    return load


def _stream_by_vod_loader(ctx: Context) -> Any:
    async def load(vod_ids: list[int]) -> list[Row[Any] | None]:
        access = await ctx.access()
        rows = await ctx.db.read(
            lambda conn: stream_queries.streams_by_vod_ids(conn, access, vod_ids)
        )
        return _by_key(rows, vod_ids, lambda r: r.vod_video_id)

    return load


def _chat_message_loader(ctx: Context) -> Any:
    async def load(ids: list[int]) -> list[Row[Any] | None]:
        access = await ctx.access()
        rows = await ctx.db.read(lambda conn: chat_queries.messages_by_ids(conn, access, ids))
        return _by_key(rows, ids, lambda r: r.id)

    return load


async def chat_message(ctx: Context, pk: int) -> Row[Any] | None:
    """A live message of a stream the viewer may see, else None."""
    return await ctx.loader("chat_message", _chat_message_loader).load(pk)  # type: ignore[no-any-return]


async def vod(ctx: Context, pk: int) -> Row[Any] | None:
    return await ctx.loader("vod", _vod_loader).load(pk)  # type: ignore[no-any-return]


async def user(ctx: Context, pk: int) -> Row[Any] | None:
    await ctx.access()
    return await ctx.loader("user", _user_loader).load(pk)  # type: ignore[no-any-return]


async def stream(ctx: Context, pk: int) -> Row[Any] | None:
    return await ctx.loader("stream", _stream_loader).load(pk)  # type: ignore[no-any-return]


async def stream_of_vod(ctx: Context, vod_pk: int) -> Row[Any] | None:
    return await ctx.loader("stream_of_vod", _stream_by_vod_loader).load(vod_pk)  # type: ignore[no-any-return]


def prime(
    ctx: Context, *, users: Sequence[Row[Any]] = (), streams: Sequence[Row[Any]] = ()
) -> None:
    """Seed the request's loaders with rows read elsewhere: users, and streams that were
    read with this viewer's visibility (a subscription event loads them in one go)."""
    for row in users:
        ctx.loader("user", _user_loader).prime(row.id, row)
    for row in streams:
        ctx.loader("stream", _stream_loader).prime(row.id, row)
