"""Live chat: pages, lookups, idempotent sends, deletes and the live feed."""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from db import chat as chat_queries
from db import streams as stream_queries
from db.chat_feed import ChatEvent, ChatFeed
from db.sql import Access, DbRow
from db.tables import CHAT_BODY_MAX
from resolvers import loaders
from resolvers.context import Context
from resolvers.errors import BadUserInput, Forbidden
from resolvers.ids import decode_id
from resolvers.pagination import Page, PageRequest, page_request, pk_from_key, trim

DEFAULT_PAGE = 50
CLIENT_MUTATION_ID_MAX = 128

ChatErrorCode = Literal[
    "STREAM_NOT_FOUND",
    "STREAM_NOT_LIVE",
    "BODY_EMPTY",
    "BODY_TOO_LONG",
    "BODY_INVALID",
    "CLIENT_MUTATION_ID_REUSED",
    "MESSAGE_DELETED",
]


@dataclass(frozen=True, slots=True)
class ChatError:
    """An expected failure the client can act on; the schema returns it in the payload."""

    code: ChatErrorCode
    message: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    message: DbRow | None
    error: ChatError | None = None


_EventRows = tuple[DbRow, Sequence[DbRow]]  # the message (with its author), its stream


def _key_in(key: list[Any]) -> int:
    if len(key) != 1:
        raise ValueError
    return pk_from_key(key[0])


def _cursor_kind(stream_pk: int) -> str:
    return f"chat:{stream_pk}"


@dataclass(frozen=True, slots=True)
class PageQuery:
    """A validated request for one page of a stream's chat (its cursors checked)."""

    arguments: tuple[int | None, str | None, int | None, str | None]  # first, after, last, before
    request: PageRequest
    keyset: chat_queries.ChatKeyset
    columns: frozenset[str] | None  # what its rows hold (all with None); `id` always


def page_query(
    ctx: Context,
    stream_pk: int,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    columns: frozenset[str] | None = None,
) -> PageQuery:
    """The page `first`/`after`/`last`/`before` ask for, its rows holding `columns`
    (all with None); BAD_USER_INPUT when they are not a valid page of this stream (a
    count out of range, another stream's cursor)."""
    request = page_request(first=first, after=after, last=last, before=before, default=DEFAULT_PAGE)
    kind = _cursor_kind(stream_pk)
    codec = ctx.services.cursors
    keyset = chat_queries.ChatKeyset(
        stream_id=stream_pk,
        limit=request.limit,
        after=codec.bound(after, kind, argument="after", parse=_key_in),
        before=codec.bound(before, kind, argument="before", parse=_key_in),
        backward=request.backward,
    )
    if columns is not None:
        columns |= {"id"}  # read by the cursors
    return PageQuery((first, after, last, before), request, keyset, columns)


def _page(ctx: Context, query: PageQuery, rows: Sequence[DbRow]) -> Page[DbRow]:
    kind = _cursor_kind(query.keyset.stream_id)
    codec = ctx.services.cursors
    return trim(rows, query.request, lambda row: codec.encode(kind, [row.id]))


async def page(ctx: Context, query: PageQuery) -> Page[DbRow]:
    """Newest first; `first`/`after` page toward older messages, `last`/`before` newer."""
    access = await ctx.access()
    rows = await ctx.db.read(
        lambda conn: chat_queries.fetch_page(conn, access, query.keyset, query.columns)
    )
    return _page(ctx, query, rows)


async def stream_with_page(ctx: Context, query: PageQuery) -> tuple[DbRow, Page[DbRow]] | None:
    """The stream and the page of its chat, in one statement (db/chat.py's
    `stream_and_page_statement`); None for a stream the viewer may not see. The
    request's stream loader is primed with the stream's row."""
    access = await ctx.access()
    rows = await ctx.db.read(
        lambda conn: chat_queries.fetch_stream_and_page(conn, access, query.keyset, query.columns)
    )
    if not rows or rows[0].part != 0:
        return None
    stream = SimpleNamespace(**rows[0].stream)  # its columns as attributes, as a row's
    loaders.prime_streams(ctx, [stream])
    return stream, _page(ctx, query, rows[1:])


def _client_mutation_id(value: str) -> str:
    if not 1 <= len(value) <= CLIENT_MUTATION_ID_MAX or "\x00" in value:
        raise BadUserInput(
            f"`clientMutationId` must be 1 to {CLIENT_MUTATION_ID_MAX} characters.",
            argument="input.clientMutationId",
        )
    return value


def _body_error(body: str) -> ChatError | None:
    if not body:
        return ChatError("BODY_EMPTY", "The message is empty.", "body")
    if len(body) > CHAT_BODY_MAX:
        return ChatError(
            "BODY_TOO_LONG",
            f"A message is at most {CHAT_BODY_MAX} characters; this one has {len(body)}.",
            "body",
        )
    if "\x00" in body:
        return ChatError("BODY_INVALID", "The message contains a NUL character.", "body")
    return None


async def send(ctx: Context, *, stream_id: str, body: str, client_mutation_id: str) -> SendResult:
    """Send once per (user, clientMutationId): a repeated call returns the same message.

    The replay check runs before the stream's status is looked at, so a retry after the
    stream ended still gets the message it created.
    """
    access = await ctx.access()
    _, stream_pk = decode_id(stream_id, expect="LiveStream")
    key = _client_mutation_id(client_mutation_id)
    text = body.strip()
    error = _body_error(text)
    if error is not None:
        return SendResult(None, error)

    def replay(existing: DbRow) -> SendResult:
        if existing.stream_id != stream_pk or existing.body != text:
            return SendResult(
                None,
                ChatError(
                    "CLIENT_MUTATION_ID_REUSED",
                    "This clientMutationId already sent a different message; use a new one.",
                    "clientMutationId",
                ),
            )
        if existing.deleted_at is not None:
            return SendResult(
                None,
                ChatError(
                    "MESSAGE_DELETED",
                    "The message sent with this clientMutationId has since been deleted.",
                    "clientMutationId",
                ),
            )
        return SendResult(existing)

    async def work(conn: AsyncConnection) -> SendResult:
        stream = await chat_queries.stream_for_sending(conn, access, stream_pk)
        if stream is None:
            return SendResult(
                None, ChatError("STREAM_NOT_FOUND", "No such live stream.", "streamId")
            )
        if stream.status == "live":
            created = await chat_queries.insert_message(
                conn,
                stream_id=stream_pk,
                user_id=access.user_id,
                body=text,
                client_mutation_id=key,
            )
            if created is not None:
                return SendResult(created)
        existing = await chat_queries.message_by_client_id(
            conn, user_id=access.user_id, client_mutation_id=key
        )
        if existing is not None:
            return replay(existing)
        if stream.status != "live":
            return SendResult(
                None,
                ChatError(
                    "STREAM_NOT_LIVE",
                    f"The stream is {stream.status}; chat is open only while it is live.",
                    "streamId",
                ),
            )
        # ON CONFLICT DO NOTHING saw a committed row that this statement's fresh snapshot
        # must see too (READ COMMITTED); reaching here would be a bug, not a user error.
        raise RuntimeError("clientMutationId conflict without a visible row")

    return await ctx.db.write(work)


async def delete(ctx: Context, *, message_id: str) -> int:
    """Soft-delete; the stream's owner or an admin only. Deleting twice is harmless.

    A message that is missing, hidden, or in someone else's stream is FORBIDDEN alike, so
    the answer never tells whether a message exists.
    """
    access = await ctx.access()
    _, pk = decode_id(message_id, expect="ChatMessage")

    async def work(conn: AsyncConnection) -> bool:
        row = await chat_queries.deletable_message(conn, access, pk)
        if row is None:
            return False
        if row.deleted_at is None:
            await chat_queries.soft_delete(conn, message_id=pk, deleted_by=access.user_id)
        return True

    if not await ctx.db.write(work):
        raise Forbidden(
            "Only the stream's owner or an admin may delete this chat message.",
            argument="input.id",
        )
    return pk


async def message_added(ctx: Context, stream_id: str) -> AsyncGenerator[DbRow, None]:
    """Check access now (errors reach the client as the subscription's error), then stream.

    A stream the viewer cannot see, or that does not exist, is FORBIDDEN alike.
    """
    await ctx.access()
    _, stream_pk = decode_id(stream_id, expect="LiveStream")
    feed = ctx.services.chat_feed
    if feed is None:
        raise RuntimeError("chat subscriptions need a ChatFeed in Services")
    ctx.fresh_loaders()
    if await loaders.stream(ctx, stream_pk) is None:
        raise Forbidden("You cannot follow this stream's chat.", argument="streamId")
    return _events(ctx, feed, stream_pk)


async def _events(ctx: Context, feed: ChatFeed, stream_pk: int) -> AsyncGenerator[DbRow, None]:
    access = await ctx.access()
    async with feed.subscribe(stream_pk) as subscription:
        async for event in subscription:
            # Read now, with this viewer's visibility, into fresh loaders: nothing comes
            # from what this long-lived connection cached for an earlier event. Every
            # subscriber in this process with the same viewer shares the one read.
            loaded = await event.once(
                ("chat_event", access), functools.partial(_load_event, ctx, access, event)
            )
            if loaded is None:  # deleted since, or no longer visible
                continue
            message_row, streams = loaded
            ctx.fresh_loaders()
            loaders.prime_streams(ctx, streams)
            yield message_row


async def _load_event(ctx: Context, access: Access, event: ChatEvent) -> _EventRows | None:
    return await ctx.db.read(lambda conn: _event_rows(conn, access, event.message_id))


async def _event_rows(conn: AsyncConnection, access: Access, message_id: int) -> _EventRows | None:
    """The message with its author (joined), and its stream: one connection, two lookups."""
    found = await chat_queries.messages_by_ids(conn, access, [message_id])
    if not found:
        return None
    row = found[0]
    return row, await stream_queries.streams_by_ids(conn, access, [row.stream_id])
