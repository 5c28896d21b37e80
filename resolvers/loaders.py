"""Per-request DataLoaders: every nested object is fetched in one batch per field."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from db import chat as chat_queries
from db import streams as stream_queries
from db import users as user_queries
from db import vods as vod_queries
from db.sql import Access, DbRow
from resolvers.context import Context

Rows = Sequence[DbRow]
LoaderFactory = Callable[[Context], Callable[[list[int]], Awaitable[list[DbRow | None]]]]


def _by_id(rows: Sequence[DbRow], ids: Sequence[int]) -> list[DbRow | None]:
    found = {r.id: r for r in rows}
    return [found.get(i) for i in ids]


def _visible(
    query: Callable[[AsyncConnection, Access, Sequence[int]], Awaitable[Rows]],
) -> LoaderFactory:
    """A loader of rows by id through `query`, with the request's visibility."""

    def factory(ctx: Context) -> Callable[[list[int]], Awaitable[list[DbRow | None]]]:
        async def load(ids: list[int]) -> list[DbRow | None]:
            access = await ctx.access()
            return _by_id(await ctx.db.read(lambda conn: query(conn, access, ids)), ids)

        return load

    return factory


def _user_loader(ctx: Context) -> Callable[[list[int]], Awaitable[list[DbRow | None]]]:
    async def load(ids: list[int]) -> list[DbRow | None]:
        return _by_id(await ctx.db.read(lambda conn: user_queries.users_by_ids(conn, ids)), ids)

    return load


_vod_loader = _visible(vod_queries.vods_by_ids)
_stream_loader = _visible(stream_queries.streams_by_ids)
_chat_message_loader = _visible(chat_queries.messages_by_ids)


async def chat_message(ctx: Context, pk: int) -> DbRow | None:
    """A live message of a stream the viewer may see, else None."""
    return await ctx.loader("chat_message", _chat_message_loader).load(pk)  # type: ignore[no-any-return]


async def vod(ctx: Context, pk: int) -> DbRow | None:
    return await ctx.loader("vod", _vod_loader).load(pk)  # type: ignore[no-any-return]


async def user(ctx: Context, pk: int) -> DbRow | None:
    await ctx.access()
    return await ctx.loader("user", _user_loader).load(pk)  # type: ignore[no-any-return]


async def stream(ctx: Context, pk: int) -> DbRow | None:
    return await ctx.loader("stream", _stream_loader).load(pk)  # type: ignore[no-any-return]


def prime_streams(ctx: Context, streams: Sequence[DbRow]) -> None:
    """Seed the request's stream loader with rows read elsewhere with this viewer's
    visibility (a subscription event loads its stream in the same read)."""
    for row in streams:
        ctx.loader("stream", _stream_loader).prime(row.id, row)
