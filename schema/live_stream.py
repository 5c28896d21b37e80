"""LiveStream and its status."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import strawberry

from db.live import StreamHealth
from resolvers import live, loaders
from resolvers.chat import PageQuery
from resolvers.ids import global_id
from resolvers.pagination import Page
from resolvers.rows import Computed, readers
from schema.calls import NOT_READ, NotRead, prefetched
from schema.node import Info, Node
from schema.user import User

T = TypeVar("T")

if TYPE_CHECKING:
    from schema.chat import ChatMessageConnection
    from schema.vod import Vod


def _bitrate(health: StreamHealth | None) -> int | None:
    return None if health is None else health.bitrate_kbps


def _bitrate_at(health: StreamHealth | None) -> datetime | None:
    return None if health is None else health.bitrate_updated_at


async def _later(health: Awaitable[StreamHealth | None], field: Callable[[Any], T]) -> T:
    return field(await health)


@strawberry.enum
class LiveStreamStatus(enum.Enum):
    IDLE = "idle"
    LIVE = "live"
    ENDING = "ending"
    ENDED = "ended"


@strawberry.type(description="A live broadcast; once ended, its recording may become a VOD.")
class LiveStream(Node):
    id: strawberry.ID
    title: str
    slug: str
    status: LiveStreamStatus
    started_at: datetime | None
    ended_at: datetime | None
    viewer_count: int
    pk: strawberry.Private[int]
    owner_pk: strawberry.Private[int]
    vod_pk: strawberry.Private[int | None]
    # Read with the list that produced this stream (Query.liveStreams), when the query
    # asks for a health field; NOT_READ elsewhere, and the field loads it itself.
    health: strawberry.Private[StreamHealth | NotRead | None] = NOT_READ
    # `bitrate_kbps` of that health, set with it: the plans read it without a call.
    bitrate: strawberry.Private[int | NotRead | None] = NOT_READ
    # Read with the stream by `node(id:)` when its selection asks for the chat (one read
    # for both): the page's query and the page. `chatMessages` uses it for the same query.
    chat_page: strawberry.Private[tuple[PageQuery, Page[Any]] | None] = None

    @classmethod
    def from_row(cls, row: Any) -> LiveStream:
        return _read_stream(row)

    @strawberry.field
    async def owner(self, info: Info) -> User | None:
        row = await loaders.user(info.context, self.owner_pk)
        return None if row is None else User.from_row(row)

    @strawberry.field(description="The VOD recorded from this stream, if any and visible.")
    async def vod(self, info: Info) -> Annotated[Vod, strawberry.lazy("schema.vod")] | None:
        from schema.vod import Vod

        if self.vod_pk is None:
            return None
        row = await loaders.vod(info.context, self.vod_pk)
        return None if row is None else Vod.from_row(row)

    # Synchronous when the list read the health with the page (no per-field await, no
    # DataLoader); otherwise they return an awaitable, which graphql-core awaits exactly
    # like an async resolver's result.
    @strawberry.field(
        description="Ingest bitrate: bytes received in the last 30 s over the time between "
        "the oldest and newest segment; null with fewer than 2 segments. Cached for 3 s."
    )
    @prefetched("bitrate")
    def bitrate_kbps(self, info: Info) -> int | None:
        health = self.health  # the plans read `bitrate` instead, when it was set
        if health is NOT_READ:
            return self._health_field(info, _bitrate)
        return None if health is None else health.bitrate_kbps

    @strawberry.field(description="When the newest segment counted in `bitrateKbps` arrived.")
    def bitrate_updated_at(self, info: Info) -> datetime | None:
        return self._health_field(info, _bitrate_at)

    def _health_field(self, info: Info, field: Callable[[StreamHealth | None], T]) -> T:
        if self.health is NOT_READ:
            return _later(live.health(info.context, self.pk), field)  # type: ignore[return-value]
        return field(self.health)

    @strawberry.field(
        description="The chat, newest first: `first`/`after` page toward older messages, "
        "`last`/`before` toward newer ones (default 50, at most 100)."
    )
    async def chat_messages(
        self,
        info: Info,
        first: int | None = strawberry.UNSET,
        after: str | None = strawberry.UNSET,
        last: int | None = strawberry.UNSET,
        before: str | None = strawberry.UNSET,
    ) -> Annotated[ChatMessageConnection, strawberry.lazy("schema.chat")]:
        from schema.chat import chat_messages

        return await chat_messages(
            info,
            self.pk,
            first=first,
            after=after,
            last=last,
            before=before,
            prefetched=self.chat_page,
        )


# A stream read from a row, or from the columns of a joined row labelled `prefix + column`.
# `health` is not read from the row: it keeps its default until the list assigns it.
stream_reader = readers(
    LiveStream,
    {
        "id": global_id("LiveStream"),
        "title": "title",
        "slug": "slug",
        "status": Computed(LiveStreamStatus, "status"),
        "started_at": "started_at",
        "ended_at": "ended_at",
        "viewer_count": "viewer_count_current",
        "pk": "id",
        "owner_pk": "owner_id",
        "vod_pk": "vod_video_id",
    },
)
_read_stream = stream_reader("")
