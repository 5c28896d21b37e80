"""Health reads share the process-wide cache: subscribers and requests cost one load per TTL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, text

from db.engine import Database
from resolvers.context import Context, Services
from resolvers.ids import encode_id
from resolvers.live import LiveHealth, healths
from resolvers.pagination import CursorCodec
from schema import build_schema
from tests.clock import FakeClock
from tests.conftest import Account, StatementLog, make_account
from tests.factories import insert_stream

SUBSCRIBE = (
    "subscription($id: ID!) { liveStreamHealth(streamId: $id) { bitrateKbps viewerCount at } }"
)
TTL = 3.0


class Setup:
    def __init__(
        self, services: Services, clock: FakeClock, sql: StatementLog, slept: list[float]
    ) -> None:
        self.services, self.clock, self.sql, self.slept = services, clock, sql, slept

    def estimator_statements(self) -> int:
        return sum("live_stream_segments" in s for s in self.sql.statements)


@pytest.fixture
async def setup(db: Database) -> AsyncIterator[Setup]:
    clock = FakeClock(50.0)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)  # no waiting: the test moves the clock itself

    sql = StatementLog()
    event.listen(db.engine.sync_engine, "before_cursor_execute", sql)
    services = Services(
        db=db,
        cursors=CursorCodec(b"k" * 32),
        live=LiveHealth.create(ttl=TTL, clock=clock, interval=2.0, sleep=sleep),
    )
    yield Setup(services, clock, sql, slept)
    event.remove(db.engine.sync_engine, "before_cursor_execute", sql)


async def _live_stream(db: Database, owner: Account) -> int:
    stream = await insert_stream(db, owner_id=owner.id, status="live", viewer_count_current=77)

    async def run(conn: Any) -> None:
        await conn.execute(
            text(
                "INSERT INTO live_stream_segments (stream_id, quality, sequence_number, "
                "duration_ms, size_bytes, received_at) VALUES "
                "(:s, '720p', 1, 2000, 1000000, now() - interval '4 seconds'), "
                "(:s, '720p', 2, 2000, 1000000, now() - interval '2 seconds')"
            ),
            {"s": stream},
        )

    await db.write(run)
    return stream


async def test_100_subscribers_cost_one_estimator_statement_per_ttl_window(
    db: Database, setup: Setup
) -> None:
    owner = await make_account(db, "ada", "creator")
    stream = await _live_stream(db, owner)
    schema = build_schema()
    streams = []
    for _ in range(100):
        # One context per subscriber, as one WebSocket connection each would have.
        context = Context(
            services=setup.services,
            token=None,
            connection_params={"Authorization": f"Bearer {owner.token}"},
        )
        subscription = await schema.subscribe(
            SUBSCRIBE,
            variable_values={"id": encode_id("LiveStream", stream)},
            context_value=context,
        )
        assert isinstance(subscription, AsyncIterator)
        streams.append(subscription)

    windows = set()
    for tick in range(10):  # 10 ticks, one second of fake time apart: 4 TTL windows
        setup.sql.clear()
        results = await asyncio.gather(*(anext(s) for s in streams))
        windows.add(int(tick // TTL))
        for result in results:
            assert result.errors is None, result.errors
            assert result.data is not None
            assert result.data["liveStreamHealth"]["bitrateKbps"] == 8000
            assert result.data["liveStreamHealth"]["viewerCount"] == 77
        loads = setup.estimator_statements()
        assert loads == (1 if tick % TTL == 0 else 0), (tick, loads)
        if tick:
            # After the first event, a tick reads the cache and nothing else.
            assert len(setup.sql.statements) == loads
        setup.clock.advance(1.0)
    stats = setup.services.live.cache.stats()
    assert stats.loads == len(windows) == 4
    assert stats.hits + stats.misses == 100 * 10
    assert set(setup.slept) == {2.0} and len(setup.slept) == 100 * 9
    for subscription in streams:
        await subscription.aclose()  # type: ignore[attr-defined]


async def test_the_subscription_completes_after_the_stream_has_ended(
    db: Database, setup: Setup
) -> None:
    owner = await make_account(db, "ada", "creator")
    stream = await _live_stream(db, owner)
    context = Context(services=setup.services, token=owner.token)
    subscription = await build_schema().subscribe(
        SUBSCRIBE, variable_values={"id": encode_id("LiveStream", stream)}, context_value=context
    )
    assert isinstance(subscription, AsyncIterator)
    first = await anext(subscription)
    assert first.data["liveStreamHealth"]["viewerCount"] == 77
    await db.write(
        lambda conn: conn.execute(
            text(
                "UPDATE live_streams SET status = 'ended', viewer_count_current = 0 WHERE id = :s"
            ),
            {"s": stream},
        )
    )
    setup.clock.advance(TTL)
    last = await anext(subscription)
    assert last.data["liveStreamHealth"]["viewerCount"] == 0
    with pytest.raises(StopAsyncIteration):
        await anext(subscription)


async def test_concurrent_requests_share_one_batched_load(db: Database, setup: Setup) -> None:
    owner = await make_account(db, "ada", "creator")
    ids = [await _live_stream(db, owner) for _ in range(10)]
    cache = setup.services.live.cache
    setup.sql.clear()
    # Three requests at once, overlapping: the later two join the first one's loads.
    results = await asyncio.gather(
        healths(cache, db, ids), healths(cache, db, ids[::-1]), healths(cache, db, ids[:3])
    )
    assert setup.estimator_statements() == 1
    assert [h.stream_id for h in results[0] if h] == ids
    assert [h.stream_id for h in results[1] if h] == ids[::-1]
    assert [h.stream_id for h in results[2] if h] == ids[:3]
    assert all(h is not None and h.bitrate_kbps == 8000 for h in results[0])
    [missing] = await healths(cache, db, [999_999])
    assert missing is None, "a missing stream is cached as None"
    assert setup.estimator_statements() == 2
    setup.sql.clear()
    await healths(cache, db, [*ids, 999_999])
    assert setup.estimator_statements() == 0
    stats = cache.stats()
    assert (stats.loads, stats.size) == (11, 11)
