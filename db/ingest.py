"""Simulated live ingest for the demo: segments arrive, viewer counts drift, old data goes.

Every `interval` seconds each `live` stream receives one `segment_ms` segment per quality,
sized from a per-stream bitrate (1080p 4.5-6 Mbps, 720p 2.5-3.5 Mbps) with +-15 % jitter;
viewer counts move by a few percent; segments older than `retention` are deleted. One tick
is one transaction that first takes a transaction-level advisory lock, so several workers
on one database never ingest twice in one tick (the others skip it).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import Database
from db.errors import DatabaseError

log = logging.getLogger("reelgraph.ingest")

# Arbitrary, fixed: the advisory lock key of the simulator ("RGINGEST").
_LOCK_KEY = 0x5247494E47455354
QUALITIES: dict[str, tuple[float, float]] = {"1080p": (4500.0, 6000.0), "720p": (2500.0, 3500.0)}
JITTER = 0.15

_INSERT = text(
    """
    INSERT INTO live_stream_segments
        (stream_id, quality, sequence_number, duration_ms, size_bytes, received_at)
    SELECT u.stream_id, u.quality,
           coalesce((SELECT max(s.sequence_number) FROM live_stream_segments s
                     WHERE s.stream_id = u.stream_id AND s.quality = u.quality), 0) + 1,
           :duration_ms, u.size_bytes, :at
    FROM unnest(CAST(:stream_ids AS bigint[]), CAST(:qualities AS text[]),
                CAST(:sizes AS bigint[])) AS u(stream_id, quality, size_bytes)
    ON CONFLICT DO NOTHING
    """
)
_VIEWERS = text(
    """
    UPDATE live_streams AS l SET viewer_count_current = u.viewers
    FROM unnest(CAST(:ids AS bigint[]), CAST(:viewers AS int[])) AS u(id, viewers)
    WHERE l.id = u.id
    """
)


@dataclass(frozen=True, slots=True)
class TickResult:
    streams: int
    inserted: int
    pruned: int
    skipped: bool = False


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class IngestSimulator:
    db: Database
    interval: float = 2.0
    segment_ms: int = 2000
    retention: timedelta = timedelta(minutes=2)
    now: Callable[[], datetime] = utc_now
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    _profiles: dict[tuple[int, str], float] = field(default_factory=dict, repr=False)

    def _size(self, stream_id: int, quality: str) -> int:
        low, high = QUALITIES[quality]
        kbps = self._profiles.get((stream_id, quality))
        if kbps is None:
            kbps = self._profiles[stream_id, quality] = self.rng.uniform(low, high)
        jittered = kbps * self.rng.uniform(1 - JITTER, 1 + JITTER)
        return round(jittered * 1000 / 8 * self.segment_ms / 1000)

    def _drift(self, viewers: int) -> int:
        return max(0, round(viewers * self.rng.uniform(0.97, 1.03)) + self.rng.randint(-5, 5))

    async def tick(self) -> TickResult:
        at = self.now()

        async def work(conn: AsyncConnection) -> TickResult:
            locked = await conn.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _LOCK_KEY}
            )
            if not locked:
                return TickResult(streams=0, inserted=0, pruned=0, skipped=True)
            live = (
                await conn.execute(
                    text(
                        "SELECT id, viewer_count_current FROM live_streams "
                        "WHERE status = 'live' ORDER BY id"
                    )
                )
            ).all()
            inserted = 0
            if live:
                ids, qualities, sizes = [], [], []
                for row in live:
                    for quality in QUALITIES:
                        ids.append(int(row.id))
                        qualities.append(quality)
                        sizes.append(self._size(int(row.id), quality))
                result = await conn.execute(
                    _INSERT,
                    {
                        "stream_ids": ids,
                        "qualities": qualities,
                        "sizes": sizes,
                        "duration_ms": self.segment_ms,
                        "at": at,
                    },
                )
                inserted = result.rowcount
                await conn.execute(
                    _VIEWERS,
                    {
                        "ids": [int(r.id) for r in live],
                        "viewers": [self._drift(int(r.viewer_count_current)) for r in live],
                    },
                )
            pruned = await conn.execute(
                text("DELETE FROM live_stream_segments WHERE received_at < :cutoff"),
                {"cutoff": at - self.retention},
            )
            return TickResult(streams=len(live), inserted=inserted, pruned=pruned.rowcount)

        return await self.db.write(work)

    async def run(self) -> None:
        """Tick until cancelled; a failed tick is logged and the next one tries again."""
        while True:
            try:
                await self.tick()
            except DatabaseError as exc:
                log.warning("live ingest tick failed: %s", type(exc).__name__)
            await self.sleep(self.interval)
