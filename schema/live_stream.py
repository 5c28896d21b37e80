"""LiveStream and its status."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from resolvers import live, loaders
from resolvers.ids import encode_id
from schema.node import Info, Node
from schema.user import User

if TYPE_CHECKING:
    from schema.chat import ChatMessageConnection
    from schema.vod import Vod


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

    @classmethod
    def from_row(cls, row: Any) -> LiveStream:
        return cls(
            id=strawberry.ID(encode_id("LiveStream", row.id)),
            title=row.title,
            slug=row.slug,
            status=LiveStreamStatus(row.status),
            started_at=row.started_at,
            ended_at=row.ended_at,
            viewer_count=row.viewer_count_current,
            pk=row.id,
            owner_pk=row.owner_id,
            vod_pk=row.vod_video_id,
        )

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

    @strawberry.field(
        description="Ingest bitrate: bytes received in the last 30 s over the time between "
        "the oldest and newest segment; null with fewer than 2 segments. Cached for 3 s."
    )
    async def bitrate_kbps(self, info: Info) -> int | None:
        found = await live.health(info.context, self.pk)
        return None if found is None else found.bitrate_kbps

    @strawberry.field(description="When the newest segment counted in `bitrateKbps` arrived.")
    async def bitrate_updated_at(self, info: Info) -> datetime | None:
        found = await live.health(info.context, self.pk)
        return None if found is None else found.bitrate_updated_at

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
            info, self.pk, first=first, after=after, last=last, before=before
        )
