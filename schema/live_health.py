"""The live stream list (Query.liveStreams) and its health subscription."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

import strawberry
from strawberry import UNSET

from db.live import StreamHealth
from resolvers import live
from resolvers.pagination import Page
from schema.columns import node_columns
from schema.live_stream import LiveStream, LiveStreamStatus, stream_reader
from schema.node import Info
from schema.pagination import (
    PageInfo,
    edges_of,
    given,
    page_parts,
    per_selection,
    selects,
    signs_cursors,
)


@strawberry.type
class LiveStreamEdge:
    cursor: str
    node: LiveStream


@strawberry.type(description="A page of live streams, newest first (Relay Cursor Connections).")
class LiveStreamConnection:
    edges: list[LiveStreamEdge] = strawberry.field(
        resolver=lambda root: edges_of(root.page, root.nodes, LiveStreamEdge)
    )
    nodes: list[LiveStream]
    page_info: PageInfo
    page: strawberry.Private[Page[Any]]

    @classmethod
    def from_page(
        cls, page: Page[Any], healths: list[StreamHealth | None] | None = None
    ) -> LiveStreamConnection:
        nodes, page_info = page_parts(page, stream_reader(""))
        if healths is not None:
            for node, health in zip(nodes, healths, strict=True):
                node.health = health
                node.bitrate = None if health is None else health.bitrate_kbps
        return cls(nodes=nodes, page_info=page_info, page=page)


@strawberry.type(description="A live stream's figures at one moment.")
class LiveStreamHealth:
    bitrate_kbps: int | None = strawberry.field(
        description="Ingest bitrate over the last 30 s; null with fewer than 2 segments."
    )
    viewer_count: int
    at: datetime = strawberry.field(
        description="When these figures were measured (they may be served from a cache "
        "for up to its TTL, so consecutive events can carry the same time)."
    )

    @classmethod
    def from_health(cls, health: StreamHealth) -> LiveStreamHealth:
        return cls(
            bitrate_kbps=health.bitrate_kbps,
            viewer_count=health.viewer_count,
            at=health.measured_at,
        )


@strawberry.type
class LiveHealthQuery:
    @strawberry.field(
        description="Live streams the viewer may see (admins: all; others: their own), "
        "newest first by creation time, ties by ID."
    )
    async def live_streams(
        self,
        info: Info,
        first: int | None = UNSET,
        after: str | None = UNSET,
        last: int | None = UNSET,
        before: str | None = UNSET,
        status: LiveStreamStatus | None = UNSET,
    ) -> LiveStreamConnection:
        chosen = given(status)
        columns, cursors, health = per_selection(info, "liveStreams", lambda: _reads(info))
        page = await live.live_streams(
            info.context,
            first=given(first),
            after=given(after),
            last=given(last),
            before=given(before),
            status=None if chosen is None else chosen.value,
            columns=columns,
            cursors=cursors,
        )
        healths = None
        if health:
            healths = await live.cached_healths(info.context, [row.id for row in page.rows])
        return LiveStreamConnection.from_page(page, healths)


def _reads(info: Info) -> tuple[frozenset[str], bool, bool]:
    """What a liveStreams selection reads: the nodes' columns, the cursors, the health."""
    return (
        node_columns(info, stream_reader("")),
        signs_cursors(info),
        selects(info, "bitrateKbps", "bitrateUpdatedAt", deep=True),
    )


@strawberry.type(name="Subscription")
class LiveHealthSubscription:
    @strawberry.subscription(
        description="A visible stream's bitrate and viewers every few seconds; completes "
        "after the stream has ended."
    )
    async def live_stream_health(
        self, info: Info, stream_id: strawberry.ID
    ) -> AsyncGenerator[LiveStreamHealth, None]:
        async for health in live.watch(info.context, stream_id):
            yield LiveStreamHealth.from_health(health)
