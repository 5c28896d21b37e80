"""The bitrate estimator: one statement per stream vs one batched statement, and the cache.

Usage: DATABASE_URL=postgresql://... python bench/live_health.py [--streams 100]
Creates a scratch database on that server (dropped afterwards), fills it with two minutes
of simulated ingest per live stream (60 ticks x 2 qualities = 120 segments each), then
prints the median latency of: the health of every stream one statement at a time, the
same in one batched statement, and 1,000 subscriber reads through the cache. Never
pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from db.engine import Database, create_engine, normalise_url
from db.ingest import IngestSimulator
from db.live import stream_health
from db.migrate import upgrade
from db.retry import RetryPolicy
from resolvers.live import LiveHealth, healths

SCRATCH = "reelgraph_bench_live"


async def admin(url: str, sql: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def median_ms(work: Callable[[], Awaitable[object]], iterations: int) -> float:
    timings = []
    for _ in range(iterations):
        started = time.perf_counter()
        await work()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=15)
    args = parser.parse_args()
    server = normalise_url(os.environ["DATABASE_URL"])
    scratch = make_url(server).set(database=SCRATCH).render_as_string(hide_password=False)
    await admin(server, f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")
    await admin(server, f"CREATE DATABASE {SCRATCH}")
    policy = RetryPolicy(attempt_timeout=120, deadline=None)
    db = Database(create_engine(scratch, policy=policy), policy=policy)
    try:
        await upgrade(db.engine)
        await db.write(
            lambda c: c.execute(
                text(
                    "INSERT INTO users (username, display_name, role) VALUES ('a', 'A', 'creator')"
                )
            )
        )
        await db.write(
            lambda c: c.execute(
                text(
                    "INSERT INTO live_streams (owner_id, title, slug, status) "
                    "SELECT 1, 's' || g, 's' || g, 'live' FROM generate_series(1, :n) g"
                ),
                {"n": args.streams},
            )
        )
        now = datetime.now(UTC) - timedelta(minutes=2)

        def clock() -> datetime:
            return now

        simulator = IngestSimulator(db, now=clock, rng=random.Random(42))
        for _ in range(60):
            await simulator.tick()
            now += timedelta(seconds=2)
        ids = list(range(1, args.streams + 1))
        segments = (
            await db.read(lambda c: c.execute(text("SELECT count(*) FROM live_stream_segments")))
        ).scalar_one()
        print(
            f"{args.streams} live streams, {segments:,} segments; median of {args.iterations} runs"
        )

        async def one_at_a_time() -> None:
            for i in ids:
                await db.read(lambda c, i=i: stream_health(c, [i]))

        async def batched() -> None:
            await db.read(lambda c: stream_health(c, ids))

        single = await median_ms(one_at_a_time, args.iterations)
        batch = await median_ms(batched, args.iterations)
        print(f"  {args.streams} statements, one per stream   {single:10.2f} ms")
        print(f"  1 batched statement                 {batch:10.2f} ms")
        print(f"  ratio per-stream / batched          {single / batch:10.1f}x")

        live = LiveHealth.create()
        await healths(live.cache, db, ids)  # warm

        async def subscribers() -> None:
            reads = (healths(live.cache, db, [ids[n % len(ids)]]) for n in range(1000))
            await asyncio.gather(*reads)

        cached = await median_ms(subscribers, args.iterations)
        # 1,000 reads took `cached` ms, so one read took `cached` microseconds.
        print(f"  1 cached subscriber read            {cached:10.2f} us")
        print(f"  ratio 1 batched statement / 1 read  {batch * 1000 / cached:10.0f}x")
    finally:
        await db.dispose()
        await admin(server, f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")


if __name__ == "__main__":
    asyncio.run(main())
