"""Rows for tests, inserted through the app's own execution layer."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import Database
from db.tables import live_streams, videos

_slugs = itertools.count(1)
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def vod_values(owner_id: int, rng: random.Random, **overrides: Any) -> dict[str, Any]:
    # Few distinct titles, durations and timestamps: plenty of ties for the id tiebreak.
    values: dict[str, Any] = {
        "owner_id": owner_id,
        "title": rng.choice(
            ["Zelda any%", "zelda 100%", "Celeste B-sides", "Hades run", "50% off_sale"]
        ),
        "slug": f"t-{next(_slugs)}-{rng.random():.12f}",
        "status": rng.choice(["ready", "ready", "ready", "processing", "pending", "failed"]),
        "duration_seconds": rng.choice([0, 60, 60, 3600, 5400]),
        "created_at": BASE_TIME + timedelta(minutes=rng.randrange(0, 40)),
        "deleted_at": None,
    }
    values.update(overrides)
    return values


async def insert_vods(db: Database, rows: list[dict[str, Any]]) -> list[int]:
    async def run(conn: AsyncConnection) -> list[int]:
        result = await conn.execute(insert(videos).returning(videos.c.id), rows)
        return [int(r) for r in result.scalars()]

    return await db.write(run)


async def insert_stream(db: Database, **values: Any) -> int:
    values.setdefault("title", "A stream")
    values.setdefault("slug", f"s-{next(_slugs)}")

    async def run(conn: AsyncConnection) -> int:
        result = await conn.execute(
            insert(live_streams).values(**values).returning(live_streams.c.id)
        )
        return int(result.scalar_one())

    return await db.write(run)
