"""The bitrate estimator against a direct computation, and the ingest simulator."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import Database
from db.ingest import _LOCK_KEY, QUALITIES, IngestSimulator
from db.live import stream_health
from db.tables import live_stream_segments
from tests.conftest import make_account
from tests.factories import BASE_TIME, insert_stream

AT = BASE_TIME + timedelta(hours=1)
WINDOW = timedelta(seconds=30)


async def insert_segments(
    db: Database, stream_id: int, layout: list[tuple[float, int]], quality: str = "720p"
) -> None:
    """`layout`: (seconds relative to AT, size_bytes) per segment."""
    if not layout:
        return
    rows = [
        {
            "stream_id": stream_id,
            "quality": quality,
            "sequence_number": i,
            "duration_ms": 2000,
            "size_bytes": size,
            "received_at": AT + timedelta(seconds=offset),
        }
        for i, (offset, size) in enumerate(layout, start=1)
    ]

    async def run(conn: AsyncConnection) -> None:
        await conn.execute(insert(live_stream_segments), rows)

    await db.write(run)


async def direct(db: Database, stream_id: int, at: datetime) -> tuple[int | None, Any]:
    """The design's formula, computed here from the raw rows in Python."""
    result = await db.read(
        lambda conn: conn.execute(
            text("SELECT size_bytes, received_at FROM live_stream_segments WHERE stream_id = :s"),
            {"s": stream_id},
        )
    )
    window = [r for r in result if at - WINDOW < r.received_at <= at]
    if len(window) < 2:
        return None, None
    newest = max(r.received_at for r in window)
    span = newest - min(r.received_at for r in window)
    if not span:
        return None, None
    seconds = Decimal(span // timedelta(microseconds=1)) / Decimal(1_000_000)
    kbps = Decimal(sum(r.size_bytes for r in window)) * 8 / seconds / 1000
    return int(kbps.to_integral_value(rounding=ROUND_HALF_UP)), newest


LAYOUTS: dict[str, list[tuple[float, int]]] = {
    "none": [],
    "one": [(-1, 1_000_000)],
    "two at the same time": [(-3, 1_000_000), (-3, 900_000)],
    "two": [(-4, 1_000_000), (-2, 1_250_000)],
    "many": [(-28 + 2 * i, 1_000_000 + 37_123 * i) for i in range(15)],
    "some older than 30 s": [(-45, 9_999_999), (-31, 5_000_000), (-20, 700_000), (-18, 710_000)],
    "exactly 30 s old is out": [(-30, 9_999_999), (-10, 1_000_000), (-9, 1_000_001)],
    "one inside, rest older": [(-60, 1_000_000), (-40, 1_000_000), (-5, 1_000_000)],
    "after the window end is out": [(-6, 500_000), (-4, 500_000), (1, 9_000_000)],
    "sub-second span": [(-0.25, 123_457), (-0.001, 98_765)],
}


@pytest.mark.parametrize("name", list(LAYOUTS))
async def test_estimator_matches_a_direct_computation(db: Database, name: str) -> None:
    owner = await make_account(db, "ada", "creator")
    stream = await insert_stream(db, owner_id=owner.id, status="live", viewer_count_current=42)
    await insert_segments(db, stream, LAYOUTS[name])
    found = await db.read(lambda conn: stream_health(conn, [stream], at=AT))
    health = found[stream]
    kbps, newest = await direct(db, stream, AT)
    assert (health.bitrate_kbps, health.bitrate_updated_at) == (kbps, newest)
    assert health.viewer_count == 42 and health.status == "live" and health.measured_at == AT
    # Worked by hand: 2,250,000 B * 8 / 2 s / 1000, and 1,410,000 B * 8 / 2 s / 1000.
    assert health.bitrate_kbps == {"two": 9000, "some older than 30 s": 5640}.get(
        name, health.bitrate_kbps
    )
    if name in ("none", "one", "two at the same time", "one inside, rest older"):
        assert health.bitrate_kbps is None and health.bitrate_updated_at is None


async def test_estimator_on_random_layouts_in_one_statement(db: Database) -> None:
    rng = random.Random(17)
    owner = await make_account(db, "ada", "creator")
    streams = []
    for _ in range(25):
        stream = await insert_stream(db, owner_id=owner.id, status="live")
        layout = [
            (round(rng.uniform(-50, 5), 3), rng.randrange(100_000, 2_000_000))
            for _ in range(rng.randrange(0, 12))
        ]
        await insert_segments(db, stream, layout, quality="1080p")
        streams.append(stream)
    found = await db.read(lambda conn: stream_health(conn, [*streams, 987_654], at=AT))
    assert set(found) == set(streams), "a missing stream has no entry"
    for stream in streams:
        assert (found[stream].bitrate_kbps, found[stream].bitrate_updated_at) == await direct(
            db, stream, AT
        )


async def test_estimator_defaults_to_the_server_clock(db: Database) -> None:
    owner = await make_account(db, "ada", "creator")
    stream = await insert_stream(db, owner_id=owner.id, status="live")

    async def run(conn: AsyncConnection) -> None:
        await conn.execute(
            text(
                "INSERT INTO live_stream_segments "
                "(stream_id, quality, sequence_number, duration_ms, size_bytes, received_at) "
                "VALUES (:s, '720p', 1, 2000, 500000, now() - interval '40 seconds'), "
                "(:s, '720p', 2, 2000, 500000, now() - interval '20 seconds'), "
                "(:s, '720p', 3, 2000, 750000, now() - interval '10 seconds')"
            ),
            {"s": stream},
        )

    await db.write(run)
    health = (await db.read(lambda conn: stream_health(conn, [stream])))[stream]
    # (500000 + 750000) bytes * 8 over 10 s = 1000 kbps; the 40 s old segment is out.
    assert health.bitrate_kbps == 1000
    assert health.bitrate_updated_at is not None
    assert health.measured_at - health.bitrate_updated_at >= timedelta(seconds=10)


# ---------------------------------------------------------------------------------------
# The ingest simulator
# ---------------------------------------------------------------------------------------


class FakeNow:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def _segments(db: Database) -> list[Any]:
    result = await db.read(
        lambda conn: conn.execute(
            text(
                "SELECT stream_id, quality, sequence_number, duration_ms, size_bytes, "
                "received_at FROM live_stream_segments ORDER BY stream_id, quality, "
                "sequence_number"
            )
        )
    )
    return list(result)


async def _viewers(db: Database) -> dict[int, int]:
    result = await db.read(
        lambda conn: conn.execute(text("SELECT id, viewer_count_current FROM live_streams"))
    )
    return {int(r.id): int(r.viewer_count_current) for r in result}


async def test_ingest_adds_segments_to_live_streams_drifts_viewers_and_prunes(
    db: Database,
) -> None:
    owner = await make_account(db, "ada", "creator")
    live = [
        await insert_stream(db, owner_id=owner.id, status="live", viewer_count_current=v)
        for v in (1000, 3)
    ]
    ended = await insert_stream(db, owner_id=owner.id, status="ended")
    idle = await insert_stream(db, owner_id=owner.id, status="idle")
    clock = FakeNow(AT)
    simulator = IngestSimulator(db, now=clock, rng=random.Random(1))
    before = await _viewers(db)
    for _ in range(5):
        result = await simulator.tick()
        assert (result.streams, result.inserted, result.pruned) == (2, 4, 0)
        clock.advance(2)
    segments = await _segments(db)
    assert {s.stream_id for s in segments} == set(live)
    for stream in live:
        for quality, (low, high) in QUALITIES.items():
            mine = [s for s in segments if s.stream_id == stream and s.quality == quality]
            assert [s.sequence_number for s in mine] == [1, 2, 3, 4, 5]
            assert [s.received_at for s in mine] == [
                AT + timedelta(seconds=2 * i) for i in range(5)
            ]
            assert all(s.duration_ms == 2000 for s in mine)
            # 2 s at the quality's bitrate range, with at most 15 % jitter.
            assert all(low * 0.85 * 250 <= s.size_bytes <= high * 1.15 * 250 for s in mine)
            assert len({s.size_bytes for s in mine}) > 1, "sizes jitter"
    after = await _viewers(db)
    assert after[ended] == before[ended] and after[idle] == before[idle]
    assert after[live[0]] != before[live[0]] and all(v >= 0 for v in after.values())
    health = await db.read(lambda conn: stream_health(conn, live, at=clock.now))
    # Both renditions together: 7-9.5 Mbps, over 5 ticks spanning 8 s.
    for stream in live:
        kbps = health[stream].bitrate_kbps
        assert kbps is not None and 7000 * 0.85 * 10 / 8 <= kbps <= 9500 * 1.15 * 10 / 8

    clock.advance(120)  # every earlier segment is now more than 2 minutes old
    result = await simulator.tick()
    assert (result.inserted, result.pruned) == (4, 20)
    segments = await _segments(db)
    assert [s.sequence_number for s in segments] == [6] * 4
    assert {s.received_at for s in segments} == {clock.now}


async def test_ingest_skips_a_tick_while_another_instance_holds_the_lock(db: Database) -> None:
    owner = await make_account(db, "ada", "creator")
    await insert_stream(db, owner_id=owner.id, status="live")
    simulator = IngestSimulator(db, now=FakeNow(AT), rng=random.Random(2))
    # Another instance's transaction (the pool's connections default to AUTOCOMMIT).
    transactional = db.engine.execution_options(isolation_level="READ COMMITTED")
    async with transactional.begin() as other:
        await other.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        result = await simulator.tick()
    assert result.skipped and result.inserted == 0
    assert await _segments(db) == []
    assert (await simulator.tick()).inserted == 2


async def test_ingest_run_ticks_every_interval_and_stops_when_cancelled(db: Database) -> None:
    owner = await make_account(db, "ada", "creator")
    await insert_stream(db, owner_id=owner.id, status="live")
    clock = FakeNow(AT)
    slept: list[float] = []
    parked = asyncio.Event()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)
        if len(slept) == 3:
            parked.set()
            await asyncio.Event().wait()  # wait here until cancelled

    simulator = IngestSimulator(db, now=clock, sleep=sleep, rng=random.Random(3))
    task = asyncio.create_task(simulator.run())
    await asyncio.wait_for(parked.wait(), timeout=30)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()
    assert slept == [2.0, 2.0, 2.0]
    assert [s.sequence_number for s in await _segments(db)] == [1, 2, 3] * 2
