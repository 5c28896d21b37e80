"""Live streams: the connection, health figures through the process-wide cache, and ticks.

Every health read goes through `LiveHealth.cache` (one entry per stream id, holding the
whole `StreamHealth`, or None for a stream that does not exist). A request that needs many
streams loads its misses in one statement, still through `get_or_load`, so concurrent
requests and subscribers share each stream's load (single-flight) and its cached value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cache import ShardedTTLCache
from db import live as live_queries
from db import streams as stream_queries
from db.engine import Database
from db.live import StreamHealth, StreamKeyset
from db.sql import DbRow
from db.tables import STREAM_STATUSES
from resolvers.errors import BadUserInput
from resolvers.ids import decode_id
from resolvers.pagination import (
    Page,
    page_request,
    pk_from_key,
    timestamp_from_key,
    timestamp_key,
    trim,
)

if TYPE_CHECKING:
    from resolvers.context import Context

DEFAULT_PAGE = 20
CURSOR_KIND = "stream:created_at:desc"
PAGE_KEYS = frozenset({"id", "created_at"})  # read by the cursors

HealthCache = ShardedTTLCache[int, StreamHealth | None]


@dataclass(frozen=True, slots=True)
class LiveHealth:
    """Process-wide: the bitrate cache and the subscription's tick interval and sleep."""

    cache: HealthCache
    interval: float = 2.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @classmethod
    def create(
        cls,
        *,
        shards: int = 16,
        max_entries: int = 1000,
        ttl: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> LiveHealth:
        cache: HealthCache = ShardedTTLCache(
            shards=shards, max_entries=max_entries, ttl=ttl, clock=clock
        )
        return cls(cache=cache, interval=interval, sleep=sleep)


class _Batch:
    """Loads started together share one statement: the first one waits a loop turn."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._open: tuple[list[int], asyncio.Future[dict[int, StreamHealth]]] | None = None

    def loader(self, stream_id: int) -> Callable[[], Awaitable[StreamHealth | None]]:
        async def load() -> StreamHealth | None:
            if self._open is None:
                keys: list[int] = []
                self._open = (keys, asyncio.ensure_future(self._run(keys)))
            keys, result = self._open
            keys.append(stream_id)
            return (await asyncio.shield(result)).get(stream_id)

        return load

    async def _run(self, keys: list[int]) -> dict[int, StreamHealth]:
        await asyncio.sleep(0)  # the other loads of this batch register meanwhile
        self._open = None  # later loads start a new batch
        return await self._db.read(lambda conn: live_queries.stream_health(conn, keys))


async def healths(
    cache: HealthCache, db: Database, stream_ids: Sequence[int]
) -> list[StreamHealth | None]:
    """Each stream's health, through the cache; the misses cost one statement together."""
    batch = _Batch(db)
    return list(await asyncio.gather(*(cache.get_or_load(i, batch.loader(i)) for i in stream_ids)))


async def cached_healths(ctx: Context, stream_ids: Sequence[int]) -> list[StreamHealth | None]:
    """Each stream's health: the cached ones read synchronously, the misses loaded
    together (one statement, single-flight with every other request)."""
    cache = ctx.services.live.cache
    found = cache.get_many(stream_ids, count_miss=False)  # get_or_load counts a miss
    missing = [i for i, (hit, _) in zip(stream_ids, found, strict=True) if not hit]
    if not missing:
        return [value for _, value in found]
    loaded = dict(zip(missing, await healths(cache, ctx.db, missing), strict=True))
    return [value if hit else loaded[i] for i, (hit, value) in zip(stream_ids, found, strict=True)]


def _health_loader(ctx: Context) -> Any:
    async def load(ids: list[int]) -> list[StreamHealth | None]:
        return await healths(ctx.services.live.cache, ctx.db, ids)

    return load


async def health(ctx: Context, stream_id: int) -> StreamHealth | None:
    """For fields of an already visible LiveStream; batched per request by a DataLoader."""
    return await ctx.loader("live_health", _health_loader).load(stream_id)  # type: ignore[no-any-return]


async def watch(ctx: Context, global_id: str) -> AsyncIterator[StreamHealth]:
    """Health of a visible stream every `interval` seconds; ends after the stream has ended.

    Visibility is checked once, directly (no DataLoader: this context lives as long as the
    WebSocket). Each tick reads the shared cache, so any number of subscribers to one
    stream cost one estimator statement per TTL window.
    """
    _, pk = decode_id(global_id, expect="LiveStream")
    access = await ctx.access()
    rows = await ctx.db.read(lambda conn: stream_queries.streams_by_ids(conn, access, [pk]))
    if not rows:
        raise BadUserInput("No live stream with this ID.", argument="streamId")
    live = ctx.services.live
    while True:
        [found] = await healths(live.cache, ctx.db, [pk])
        if found is None:
            return
        yield found
        if found.status == "ended":
            return
        await live.sleep(live.interval)


def _key_in(key: list[Any]) -> tuple[datetime, int]:
    if len(key) != 2:
        raise ValueError
    return timestamp_from_key(key[0]), pk_from_key(key[1])


async def live_streams(
    ctx: Context,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    status: str | None,
    columns: frozenset[str] | None = None,
    cursors: bool = True,
) -> Page[DbRow]:
    """A page of streams; its rows hold the `columns` named (all with None), their ids
    and, if its `cursors` are read, their keys."""
    request = page_request(first=first, after=after, last=last, before=before, default=DEFAULT_PAGE)
    if status is not None and status not in STREAM_STATUSES:
        raise BadUserInput(f"Unknown status {status!r}.", argument="status")
    codec = ctx.services.cursors
    keyset = StreamKeyset(
        limit=request.limit,
        after=codec.bound(after, CURSOR_KIND, argument="after", parse=_key_in),
        before=codec.bound(before, CURSOR_KIND, argument="before", parse=_key_in),
        backward=request.backward,
    )
    access = await ctx.access()
    if columns is not None:
        columns |= PAGE_KEYS if cursors else {"id"}
    rows = await ctx.db.read(
        lambda conn: live_queries.fetch_page(conn, access, keyset, status=status, columns=columns)
    )

    def cursor_of(row: DbRow) -> str:
        return codec.encode(CURSOR_KIND, [timestamp_key(row.created_at), row.id])

    return trim(rows, request, cursor_of)
