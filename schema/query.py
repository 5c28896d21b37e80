"""The Query root."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import strawberry
from strawberry import UNSET

from resolvers import loaders, vods
from resolvers.context import Context
from resolvers.errors import BadUserInput
from resolvers.ids import decode_id
from schema.chat import ChatMessage, chat_look_ahead, stream_with_chat
from schema.columns import node_columns
from schema.live_stream import LiveStream
from schema.node import Info, Node
from schema.pagination import given, per_selection, selects, signs_cursors
from schema.user import User
from schema.vod import OrderDirection, Vod, VodConnection, VodFilter, VodOrder, vod_reader

MAX_NODES = 100

_NODE_KINDS: dict[str, tuple[Callable[[Context, int], Awaitable[Any]], Callable[[Any], Node]]] = {
    "User": (loaders.user, User.from_row),
    "Vod": (loaders.vod, Vod.from_row),
    "LiveStream": (loaders.stream, LiveStream.from_row),
    "ChatMessage": (loaders.chat_message, ChatMessage.from_row),
}


async def _node(ctx: Context, type_name: str, pk: int) -> Node | None:
    kind = _NODE_KINDS.get(type_name)
    if kind is None:
        return None
    load, from_row = kind
    row = await load(ctx, pk)
    return None if row is None else from_row(row)


def _vod_reads(info: Info) -> tuple[bool, frozenset[str], bool]:
    """What a vods selection reads: the total, the nodes' columns, the cursors."""
    return selects(info, "totalCount"), node_columns(info, vod_reader), signs_cursors(info)


@strawberry.type
class Query:
    @strawberry.field(description="Any object by its global ID; null when missing or hidden.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        await info.context.access()
        type_name, pk = decode_id(id)
        if type_name == "LiveStream" and (chat := chat_look_ahead(info, pk)) is not None:
            return await stream_with_chat(info, chat)
        return await _node(info.context, type_name, pk)

    @strawberry.field(description=f"Objects by global ID, in order; at most {MAX_NODES}.")
    async def nodes(self, info: Info, ids: list[strawberry.ID]) -> list[Node | None]:
        await info.context.access()
        if len(ids) > MAX_NODES:
            raise BadUserInput(f"At most {MAX_NODES} ids per call.", argument="ids")
        decoded = [decode_id(i) for i in ids]  # a malformed id is refused before any query
        # Gathered, so each type's DataLoader sees all its ids in one batch (one query).
        return list(await asyncio.gather(*(_node(info.context, t, pk) for t, pk in decoded)))

    @strawberry.field(description="The authenticated user; null when anonymous.")
    async def viewer(self, info: Info) -> User | None:
        access = await info.context.viewer()
        if access is None:
            return None
        row = await loaders.user(info.context, access.user_id)
        return None if row is None else User.from_row(row)

    @strawberry.field(description="The VOD library: every VOD the viewer may see.")
    async def vods(
        self,
        info: Info,
        first: int | None = UNSET,
        after: str | None = UNSET,
        last: int | None = UNSET,
        before: str | None = UNSET,
        filter: VodFilter | None = UNSET,
        order_by: VodOrder | None = UNSET,
    ) -> VodConnection:
        order = given(order_by) or VodOrder()
        filter = given(filter)
        with_total, columns, cursors = per_selection(info, "vods", lambda: _vod_reads(info))
        page = await vods.vods(
            info.context,
            first=given(first),
            after=given(after),
            last=given(last),
            before=given(before),
            status=filter.status.value if filter and filter.status else None,
            search=given(filter.search) if filter else None,
            order=order.field.value,
            descending=order.direction is OrderDirection.DESC,
            with_total=with_total,
            columns=columns,
            cursors=cursors,
        )
        return VodConnection.from_page(page)
