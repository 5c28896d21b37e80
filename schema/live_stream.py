"""LiveStream and its status."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from resolvers import loaders
from resolvers.ids import encode_id
from schema.node import Info, Node
from schema.user import User

if TYPE_CHECKING:
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
