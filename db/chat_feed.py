"""Fan-out of new chat messages to this process's subscribers, across instances.

`sendChatMessage` runs `pg_notify('chat', {"stream_id", "message_id"})` in its own
transaction (db/chat.py). Every server process holds one LISTEN connection (db/notify.py)
and hands each notification to the subscribers of that stream in this process, as one
`ChatEvent` shared by all of them. A subscriber loads the message itself, with its own
visibility, so the feed never decides what a viewer may read; `ChatEvent.once` lets the
subscribers that ask the same question (same viewer) share one load of that event, so a
message costs one database read per distinct viewer and process, not one per subscriber.

Slow subscribers: each subscription buffers at most `queue_size` events. Handing one over
never waits; when a subscriber's buffer is full, that subscriber is cut off: its buffer is
dropped, it is unregistered at once, and its iteration ends (the GraphQL subscription
completes). Everyone else keeps receiving, and no memory grows without bound. A client
that sees its subscription complete resubscribes and backfills with
`chatMessages(first: ...)` up to the newest message it has.

Gaps: notifications sent while the LISTEN connection was down are lost by PostgreSQL, so
after a reconnection the feed asks the database for messages newer than the newest id it
had delivered for each subscribed stream (the "high water") and delivers those. Ids seen
recently are remembered per stream, so nothing is delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, Literal, TypeVar

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from db import chat as chat_queries
from db.engine import Database
from db.notify import Connect, Listener, listen_connector

log = logging.getLogger("reelgraph.db.chat_feed")

EndReason = Literal["overflow", "shutdown", "closed"]
T = TypeVar("T")


class ChatEvent:
    """One new message, as handed to every subscriber of its stream in this process."""

    __slots__ = ("_shared", "message_id", "stream_id")

    def __init__(self, stream_id: int, message_id: int) -> None:
        self.stream_id = stream_id
        self.message_id = message_id
        self._shared: dict[Hashable, asyncio.Future[Any]] = {}

    def once(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        """Run `load` once per key for this event; every caller with the key awaits it.

        The load runs in its own task: a subscriber that goes away while waiting does
        not cancel it for the others.
        """
        future = self._shared.get(key)
        if future is None:
            future = self._shared[key] = asyncio.ensure_future(load())
        return asyncio.shield(future)


class ChatSubscription:
    """A stream's new messages, in notification order, as an async iterator."""

    def __init__(self, stream_id: int, *, capacity: int) -> None:
        self.stream_id = stream_id
        self.ended: EndReason | None = None
        self._capacity = capacity
        self._items: deque[ChatEvent] = deque()
        self._wakeup = asyncio.Event()

    def push(self, event: ChatEvent) -> bool:
        """Buffer an event without waiting; False (and the subscription ends) when full."""
        if self.ended is not None:
            return False
        if len(self._items) >= self._capacity:
            self._items.clear()
            self.end("overflow")
            return False
        self._items.append(event)
        self._wakeup.set()
        return True

    def end(self, reason: EndReason) -> None:
        if self.ended is None:
            self.ended = reason
        self._wakeup.set()

    def __aiter__(self) -> ChatSubscription:
        return self

    async def __anext__(self) -> ChatEvent:
        while True:
            if self._items:
                return self._items.popleft()
            if self.ended is not None:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()


class _Recent:
    """The last `size` ids delivered for a stream: a bounded set, oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: OrderedDict[int, None] = OrderedDict()

    def add(self, message_id: int) -> bool:
        """True if the id is new."""
        if message_id in self._ids:
            return False
        self._ids[message_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


class ChatFeed:
    def __init__(
        self,
        db: Database,
        *,
        connect: Connect,
        queue_size: int = 256,
        catch_up_limit: int = 1000,
        remembered_ids: int = 1024,
        **listener_options: Any,
    ) -> None:
        self._db = db
        self._queue_size = queue_size
        self._catch_up_limit = catch_up_limit
        self._remembered_ids = remembered_ids
        self._subscribers: dict[int, set[ChatSubscription]] = {}
        self._high_water: dict[int, int] = {}
        self._recent: dict[int, _Recent] = {}
        self._closed = False
        self.listener = Listener(
            connect,
            channels=(chat_queries.CHANNEL,),
            on_notify=self._notified,
            on_reconnect=self._catch_up,
            **listener_options,
        )
        self.delivered = 0  # events handed to subscribers
        self.cut_off = 0  # subscribers ended because their buffer was full

    @classmethod
    def for_database(cls, db: Database, **options: Any) -> ChatFeed:
        return cls(db, connect=listen_connector(db.engine), **options)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def start(self) -> None:
        await self.listener.start()

    async def close(self) -> None:
        """Stop listening and end every subscription (they complete, nothing leaks)."""
        self._closed = True
        await self.listener.close()
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.end("shutdown")
        self._subscribers.clear()
        self._high_water.clear()
        self._recent.clear()

    @contextlib.asynccontextmanager
    async def subscribe(self, stream_id: int) -> AsyncIterator[ChatSubscription]:
        """Register for a stream's new messages until the block exits."""
        subscription = ChatSubscription(stream_id, capacity=self._queue_size)
        if self._closed:
            subscription.end("shutdown")
            yield subscription
            return
        self._subscribers.setdefault(stream_id, set()).add(subscription)
        self._recent.setdefault(stream_id, _Recent(self._remembered_ids))
        try:
            if stream_id not in self._high_water:
                latest = await self._db.read(
                    lambda conn: chat_queries.latest_message_id(conn, stream_id)
                )
                if stream_id in self._subscribers:
                    self._high_water[stream_id] = max(
                        self._high_water.get(stream_id, 0), latest or 0
                    )
            yield subscription
        finally:
            subscription.end("closed")
            self._remove(subscription)

    def _remove(self, subscription: ChatSubscription) -> None:
        stream_id = subscription.stream_id
        subscriptions = self._subscribers.get(stream_id)
        if subscriptions is None:
            return
        subscriptions.discard(subscription)
        if not subscriptions:
            del self._subscribers[stream_id]
            self._high_water.pop(stream_id, None)
            self._recent.pop(stream_id, None)

    def _notified(self, _channel: str, payload: str) -> None:
        try:
            event = orjson.loads(payload)
            stream_id, message_id = event["stream_id"], event["message_id"]
            if type(stream_id) is not int or type(message_id) is not int:
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring malformed chat notification %r", payload[:200])
            return
        self.dispatch(stream_id, message_id)

    def dispatch(self, stream_id: int, message_id: int) -> None:
        """Hand the message to every subscriber of the stream; never waits."""
        subscriptions = self._subscribers.get(stream_id)
        if not subscriptions:
            return
        if not self._recent[stream_id].add(message_id):
            return
        self._high_water[stream_id] = max(self._high_water.get(stream_id, 0), message_id)
        event = ChatEvent(stream_id, message_id)
        for subscription in list(subscriptions):
            if subscription.push(event):
                self.delivered += 1
            else:
                self.cut_off += 1
                log.info("chat subscriber of stream %s fell behind; cut off", stream_id)
                self._remove(subscription)

    async def _catch_up(self) -> None:
        """Deliver what was committed while the LISTEN connection was down."""
        for stream_id, high_water in list(self._high_water.items()):

            async def missed(
                conn: AsyncConnection, s: int = stream_id, h: int = high_water
            ) -> list[int]:
                return await chat_queries.message_ids_after(
                    conn, stream_id=s, after=h, limit=self._catch_up_limit
                )

            for message_id in await self._db.read(missed):
                self.dispatch(stream_id, message_id)
