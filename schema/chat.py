"""ChatMessage, its connection, the chat mutations and the chatMessageAdded subscription.

Expected failures of `sendChatMessage` (stream missing or not live, body empty or too
long, a reused clientMutationId) are data: `SendChatMessagePayload.errors`, each with a
`ChatMessageErrorCode`. Top-level errors stay for what a client cannot fix by changing
the message: UNAUTHENTICATED, BAD_USER_INPUT (a malformed ID or clientMutationId),
FORBIDDEN, DATABASE_*.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLObjectType
from graphql.execution.values import VariableValues, get_argument_values
from strawberry import UNSET

from db.chat import AUTHOR_PREFIX
from resolvers import chat, loaders
from resolvers.chat import ChatError, PageQuery
from resolvers.ids import encode_id, global_id
from resolvers.pagination import Page
from resolvers.rows import Joined, row_reader
from schema.columns import node_columns
from schema.live_stream import LiveStream
from schema.node import Info, Node
from schema.pagination import PageInfo, edges_of, given, page_parts, single_selection
from schema.user import User, user_reader


@strawberry.type(description="A message in a live stream's chat.")
class ChatMessage(Node):
    id: strawberry.ID
    body: str
    created_at: datetime
    # Read in the same statement as the message (db/chat.py), never loaded per field.
    author: User | None
    pk: strawberry.Private[int]
    stream_pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: Any) -> ChatMessage:
        return message_reader(row)

    @strawberry.field
    async def stream(self, info: Info) -> LiveStream:
        row = await loaders.stream(info.context, self.stream_pk)
        if row is None:  # a message is only ever read through a stream the viewer sees
            raise RuntimeError(f"stream {self.stream_pk} of a visible message is hidden")
        return LiveStream.from_row(row)


# A message row carries its author as joined columns (db/chat.py).
message_reader = row_reader(
    ChatMessage,
    {
        "id": global_id("ChatMessage"),
        "body": "body",
        "created_at": "created_at",
        "author": Joined(user_reader, AUTHOR_PREFIX),
        "pk": "id",
        "stream_pk": "stream_id",
    },
)


@strawberry.type
class ChatMessageEdge:
    cursor: str
    node: ChatMessage


@strawberry.type(description="A page of chat, newest first. No totalCount, by design.")
class ChatMessageConnection:
    edges: list[ChatMessageEdge] = strawberry.field(
        resolver=lambda root: edges_of(root.page, root.nodes, ChatMessageEdge)
    )
    nodes: list[ChatMessage]
    page_info: PageInfo
    page: strawberry.Private[Page[Any]]

    @classmethod
    def from_page(cls, page: Page[Any]) -> ChatMessageConnection:
        nodes, page_info = page_parts(page, message_reader)
        return cls(nodes=nodes, page_info=page_info, page=page)


async def chat_messages(
    info: Info,
    stream_pk: int,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    prefetched: tuple[PageQuery, Page[Any]] | None = None,
) -> ChatMessageConnection:
    """`LiveStream.chatMessages`: the parent stream is already known to be visible. A
    page read with the stream (`stream_with_chat`) for these same arguments is used."""
    arguments = (given(first), given(after), given(last), given(before))
    if prefetched is not None and prefetched[0].arguments == arguments:
        return ChatMessageConnection.from_page(prefetched[1])
    first, after, last, before = arguments
    query = chat.page_query(
        info.context,
        stream_pk,
        first=first,
        after=after,
        last=last,
        before=before,
        columns=node_columns(info, message_reader),
    )
    return ChatMessageConnection.from_page(await chat.page(info.context, query))


def chat_look_ahead(info: Info, stream_pk: int) -> PageQuery | None:
    """The chat page that the current field's selection asks of a LiveStream, when it asks
    for exactly one (`chatMessages` once, no directive) with valid arguments."""
    node = single_selection(info, "chatMessages", "LiveStream")
    if node is None:
        return None
    raw = info._raw_info
    stream_type = raw.schema.get_type("LiveStream")
    assert isinstance(stream_type, GraphQLObjectType)
    try:
        arguments = get_argument_values(
            stream_type.fields["chatMessages"], node, VariableValues({}, info.variable_values)
        )
        return chat.page_query(
            info.context,
            stream_pk,
            first=arguments.get("first"),
            after=arguments.get("after"),
            last=arguments.get("last"),
            before=arguments.get("before"),
            columns=node_columns(info, message_reader, [node]),
        )
    except Exception:  # BAD_USER_INPUT, say: the field reports it, on the ordinary path
        return None


async def stream_with_chat(info: Info, query: PageQuery) -> LiveStream | None:
    """`node(id:)` of a LiveStream whose selection asks for its chat (`chat_look_ahead`):
    the stream and the page in one statement, where the ordinary path takes two (the
    stream's loader, then the page), each a round trip."""
    found = await chat.stream_with_page(info.context, query)
    if found is None:
        return None
    row, page = found
    stream = LiveStream.from_row(row)
    stream.chat_page = (query, page)
    return stream


@strawberry.enum(description="Why a chat mutation did nothing.")
class ChatMessageErrorCode(enum.Enum):
    STREAM_NOT_FOUND = "STREAM_NOT_FOUND"
    STREAM_NOT_LIVE = "STREAM_NOT_LIVE"
    BODY_EMPTY = "BODY_EMPTY"
    BODY_TOO_LONG = "BODY_TOO_LONG"
    BODY_INVALID = "BODY_INVALID"
    CLIENT_MUTATION_ID_REUSED = "CLIENT_MUTATION_ID_REUSED"
    MESSAGE_DELETED = "MESSAGE_DELETED"


@strawberry.type(description="An expected failure, with a code a client can branch on.")
class ChatMessageError:
    code: ChatMessageErrorCode
    message: str
    field: str | None = strawberry.field(description="The input field at fault, if one is.")

    @classmethod
    def from_error(cls, error: ChatError) -> ChatMessageError:
        return cls(code=ChatMessageErrorCode(error.code), message=error.message, field=error.field)


@strawberry.input
class SendChatMessageInput:
    stream_id: strawberry.ID
    body: str = strawberry.field(description="Trimmed, then 1 to 500 characters.")
    client_mutation_id: str = strawberry.field(
        description="Idempotency key, unique per user (1 to 128 characters): sending again "
        "with the same key returns the same message and creates nothing."
    )


@strawberry.type
class SendChatMessagePayload:
    message: ChatMessage | None = strawberry.field(description="Null when `errors` is not.")
    client_mutation_id: str
    errors: list[ChatMessageError]


@strawberry.input
class DeleteChatMessageInput:
    id: strawberry.ID
    client_mutation_id: str | None = UNSET


@strawberry.type
class DeleteChatMessagePayload:
    deleted_message_id: strawberry.ID
    client_mutation_id: str | None


@strawberry.type(name="Mutation")
class ChatMutation:
    @strawberry.mutation(
        description="Post to a live stream's chat; idempotent per (viewer, clientMutationId)."
    )
    async def send_chat_message(
        self, info: Info, input: SendChatMessageInput
    ) -> SendChatMessagePayload:
        result = await chat.send(
            info.context,
            stream_id=input.stream_id,
            body=input.body,
            client_mutation_id=input.client_mutation_id,
        )
        return SendChatMessagePayload(
            message=None if result.message is None else ChatMessage.from_row(result.message),
            client_mutation_id=input.client_mutation_id,
            errors=[] if result.error is None else [ChatMessageError.from_error(result.error)],
        )

    @strawberry.mutation(
        description="Soft-delete a message: its stream's owner or an admin; twice is harmless."
    )
    async def delete_chat_message(
        self, info: Info, input: DeleteChatMessageInput
    ) -> DeleteChatMessagePayload:
        pk = await chat.delete(info.context, message_id=input.id)
        return DeleteChatMessagePayload(
            deleted_message_id=strawberry.ID(encode_id("ChatMessage", pk)),
            client_mutation_id=given(input.client_mutation_id),
        )


@strawberry.type(name="Subscription")
class ChatSubscription:
    @strawberry.subscription(
        description="New messages of a stream's chat, from every server instance."
    )
    async def chat_message_added(
        self, info: Info, stream_id: strawberry.ID
    ) -> AsyncIterator[ChatMessage]:
        rows = await chat.message_added(info.context, stream_id)
        return _messages(rows)


async def _messages(rows: AsyncGenerator[Any, None]) -> AsyncIterator[ChatMessage]:
    # Closing this generator (client gone, server stopping) closes `rows`, which
    # unregisters the subscriber.
    try:
        async for row in rows:
            yield ChatMessage.from_row(row)
    finally:
        await rows.aclose()
