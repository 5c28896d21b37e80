"""The chat feed: LISTEN/NOTIFY fan-out, slow subscribers, reconnection, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from db import chat as chat_queries
from db.chat_feed import ChatEvent, ChatFeed, ChatSubscription
from db.engine import Database
from tests.conftest import make_account
from tests.db.admin import eventually
from tests.factories import insert_stream


@contextlib.asynccontextmanager
async def running_feed(db: Database, **options: object) -> AsyncIterator[ChatFeed]:
    feed = ChatFeed.for_database(db, **options)  # type: ignore[arg-type]
    await feed.start()
    try:
        yield feed
    finally:
        await feed.close()


async def send(db: Database, stream_id: int, user_id: int, key: str) -> int:
    row = await db.write(
        lambda conn: chat_queries.insert_message(
            conn, stream_id=stream_id, user_id=user_id, body=key, client_mutation_id=key
        )
    )
    assert row is not None
    return int(row.id)


async def take_events(
    subscription: ChatSubscription, n: int, within: float = 5.0
) -> list[ChatEvent]:
    taken: list[ChatEvent] = []
    async with asyncio.timeout(within):
        async for event in subscription:
            taken.append(event)
            if len(taken) == n:
                break
    return taken


async def take(subscription: ChatSubscription, n: int, within: float = 5.0) -> list[int]:
    return [e.message_id for e in await take_events(subscription, n, within)]


@pytest.fixture
async def stream(db: Database) -> tuple[int, int]:
    owner = await make_account(db, "ada", "creator")
    return await insert_stream(db, owner_id=owner.id, status="live"), owner.id


async def test_a_notification_reaches_every_subscriber_of_its_stream_only(
    db: Database, stream: tuple[int, int]
) -> None:
    stream_id, user_id = stream
    other = await insert_stream(db, owner_id=user_id, status="live")
    async with running_feed(db) as feed:
        async with (
            feed.subscribe(stream_id) as a,
            feed.subscribe(stream_id) as b,
            feed.subscribe(other) as c,
        ):
            assert feed.subscriber_count == 3
            sent = [await send(db, stream_id, user_id, f"m{i}") for i in range(3)]
            elsewhere = await send(db, other, user_id, "x")
            events = await take_events(a, 3)
            assert [e.message_id for e in events] == sent
            shared = await take_events(b, 3)
            assert shared == events  # the very same event objects
            assert await take(c, 1) == [elsewhere]
            # Subscribers asking the same question of an event share one load.
            loads: list[str] = []

            async def load(key: str) -> str:
                loads.append(key)
                await asyncio.sleep(0.01)
                return key.upper()

            answers = await asyncio.gather(
                events[0].once("viewer 1", lambda: load("viewer 1")),
                events[0].once("viewer 1", lambda: load("viewer 1")),
                events[0].once("viewer 2", lambda: load("viewer 2")),
            )
            assert answers == ["VIEWER 1", "VIEWER 1", "VIEWER 2"]
            assert loads == ["viewer 1", "viewer 2"]
        assert feed.subscriber_count == 0


async def test_a_slow_subscriber_is_cut_off_and_the_others_keep_up(
    db: Database, stream: tuple[int, int]
) -> None:
    stream_id, user_id = stream
    async with running_feed(db, queue_size=3) as feed:
        async with feed.subscribe(stream_id) as slow, feed.subscribe(stream_id) as fast:
            received: list[int] = []

            async def keep_up() -> None:
                async for event in fast:
                    received.append(event.message_id)

            reader = asyncio.create_task(keep_up())
            sent = []
            for i in range(10):
                sent.append(await send(db, stream_id, user_id, f"m{i}"))
                await eventually(lambda: len(received) == len(sent), within=5.0)
            assert received == sent
            # The slow one never read: its buffer overflowed, it was dropped, its stream ends.
            assert slow.ended == "overflow"
            assert [i async for i in slow] == []
            assert feed.subscriber_count == 1 and feed.cut_off == 1
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        assert feed.subscriber_count == 0


async def test_the_listener_reconnects_and_catches_up_on_what_it_missed(
    db: Database, stream: tuple[int, int]
) -> None:
    stream_id, user_id = stream
    # A fixed, long enough backoff that the message below is sent while disconnected.
    async with running_feed(db, backoff_base=0.5, rand=lambda: 1.0) as feed:
        async with feed.subscribe(stream_id) as subscription:
            before = await send(db, stream_id, user_id, "before")
            assert await take(subscription, 1) == [before]
            pid = feed.listener.backend_pid
            assert pid is not None
            await db.write(lambda conn: conn.execute(text(f"SELECT pg_terminate_backend({pid})")))
            await eventually(lambda: not feed.listener.listening, within=5.0)
            missed = await send(db, stream_id, user_id, "during the gap")
            await eventually(lambda: feed.listener.listening, within=5.0)
            assert feed.listener.connections == 2
            assert await take(subscription, 1) == [missed]
            after = await send(db, stream_id, user_id, "after")
            assert await take(subscription, 1) == [after]
            assert feed.delivered == 3  # nothing twice


async def test_closing_the_feed_ends_every_subscription(
    db: Database, stream: tuple[int, int]
) -> None:
    stream_id, _ = stream
    feed = ChatFeed.for_database(db)
    await feed.start()
    assert feed.listener.listening
    async with feed.subscribe(stream_id) as subscription:
        iterating = asyncio.create_task(take(subscription, 1))
        await asyncio.sleep(0.05)
        await feed.close()
        assert await iterating == []
        assert subscription.ended == "shutdown"
        assert feed.subscriber_count == 0
    assert not feed.listener.listening
    async with feed.subscribe(stream_id) as late:  # after close: ends at once
        assert [i async for i in late] == []
    assert feed.subscriber_count == 0
