"""Vod, its filter, order and connection."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import strawberry
from strawberry import UNSET

from db.vods import OWNER_PREFIX, STREAM_PREFIX
from resolvers.ids import global_id
from resolvers.pagination import Page
from resolvers.rows import Computed, Joined, row_reader
from schema.live_stream import LiveStream, stream_reader
from schema.node import Node
from schema.pagination import PageInfo, edges_of, page_parts
from schema.user import User, user_reader


@strawberry.enum(description="Where a VOD is in its processing pipeline.")
class VodStatus(enum.Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


@strawberry.enum(description="What to sort VODs by; ties are always broken by ID.")
class VodOrderField(enum.Enum):
    CREATED_AT = "created_at"
    TITLE = "title"
    DURATION = "duration_seconds"


@strawberry.enum
class OrderDirection(enum.Enum):
    ASC = "asc"
    DESC = "desc"


@strawberry.input(description="Sort order of a VOD list. Default: newest first.")
class VodOrder:
    field: VodOrderField = VodOrderField.CREATED_AT
    direction: OrderDirection = OrderDirection.DESC


@strawberry.input(description="Narrow a VOD list. Fields combine with AND.")
class VodFilter:
    status: VodStatus | None = UNSET
    search: str | None = strawberry.field(
        default=UNSET, description="Case-insensitive substring of the title (max 200 chars)."
    )


@strawberry.type(description="A video on demand: uploaded, or recorded from a live stream.")
class Vod(Node):
    id: strawberry.ID
    title: str
    slug: str
    description: str
    status: VodStatus
    duration_seconds: int = strawberry.field(description="0 until processing has measured it.")
    width: int | None
    height: int | None
    thumbnail_url: str | None
    created_at: datetime
    published_at: datetime | None
    # Read in the same statement as the VOD itself (db/vods.py), never loaded per field.
    owner: User | None
    stream: LiveStream | None = strawberry.field(
        description="The live stream this VOD was recorded from, if visible."
    )
    pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: Any) -> Vod:
        return vod_reader(row)


# A VOD row carries its owner and its visible stream as joined columns (db/vods.py).
vod_reader = row_reader(
    Vod,
    {
        "id": global_id("Vod"),
        "title": "title",
        "slug": "slug",
        "description": "description",
        "status": Computed(VodStatus, "status"),
        "duration_seconds": "duration_seconds",
        "width": "width",
        "height": "height",
        "thumbnail_url": "thumbnail_url",
        "created_at": "created_at",
        "published_at": "published_at",
        "owner": Joined(user_reader, OWNER_PREFIX),
        "stream": Joined(stream_reader, STREAM_PREFIX),
        "pk": "id",
    },
)


@strawberry.type
class VodEdge:
    cursor: str
    node: Vod


@strawberry.type(description="A page of VODs (Relay Cursor Connections).")
class VodConnection:
    edges: list[VodEdge] = strawberry.field(
        resolver=lambda root: edges_of(root.page, root.nodes, VodEdge)
    )
    nodes: list[Vod]
    page_info: PageInfo
    page: strawberry.Private[Page[Any]]

    @strawberry.field(
        description="How many VODs match the filter and visibility, whatever the cursor."
    )
    def total_count(self) -> int:
        # Computed in the page's own statement whenever the query selects this field.
        assert self.page.total is not None
        return self.page.total

    @classmethod
    def from_page(cls, page: Page[Any]) -> VodConnection:
        nodes, page_info = page_parts(page, vod_reader)
        return cls(nodes=nodes, page_info=page_info, page=page)
