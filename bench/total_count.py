"""totalCount strategies: scalar subquery vs count(*) OVER (), on the same data, same run.

Usage: DATABASE_URL=postgresql://... python bench/total_count.py [--iterations 15]
The database needs data first, e.g. `reelgraph seed --users 1000 --vods 1000000`.
Prints the median latency of each strategy per scenario and the ratio window / subquery
(the baseline is the subquery strategy, measured in the same run). Never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from sqlalchemy import text

from db.engine import Database, create_engine
from db.retry import RetryPolicy
from db.sql import Access
from db.vods import Keyset, VodFilter, fetch_page


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=15)
    args = parser.parse_args()
    policy = RetryPolicy(attempt_timeout=120, deadline=None)
    db = Database(create_engine(os.environ["DATABASE_URL"], policy=policy), policy=policy)

    async def scalar(sql: str) -> Any:
        return (await db.read(lambda c: c.execute(text(sql)))).scalar()

    vods = await scalar("SELECT count(*) FROM videos")
    creators = await scalar("SELECT count(*) FROM users WHERE role = 'creator'")
    creator = await scalar(
        "SELECT owner_id FROM videos GROUP BY owner_id ORDER BY count(*) DESC LIMIT 1"
    )
    mid = (
        await db.read(
            lambda c: c.execute(
                text(
                    "SELECT created_at, id FROM videos WHERE deleted_at IS NULL "
                    "ORDER BY created_at DESC, id DESC "
                    "OFFSET (SELECT count(*) / 2 FROM videos) LIMIT 1"
                )
            )
        )
    ).one()
    print(
        f"dataset: {vods:,} VODs over {creators:,} creators; page size 20; "
        f"median of {args.iterations} runs each, strategies alternated"
    )
    scenarios = [
        ("admin, first page", Access(0, True), VodFilter(), None),
        ("admin, page at the middle", Access(0, True), VodFilter(), (mid.created_at, mid.id)),
        ("admin, status=ready", Access(0, True), VodFilter(status="ready"), None),
        ("creator, first page", Access(creator, False), VodFilter(), None),
        ("creator, search 'zelda'", Access(creator, False), VodFilter(search="zelda"), None),
    ]
    print(f"{'scenario':32} {'subquery ms':>12} {'window ms':>12} {'window/subquery':>16}")
    for name, access, vod_filter, after in scenarios:
        keyset = Keyset(order="created_at", descending=True, limit=20, after=after)
        timings: dict[str, list[float]] = {"subquery": [], "window": []}
        iterations = args.iterations if access.user_id else max(3, args.iterations // 5)
        for _ in range(iterations):
            for strategy in ("subquery", "window"):
                started = time.perf_counter()
                page = await db.read(
                    lambda c, s=strategy, a=access, f=vod_filter, k=keyset: fetch_page(
                        c, a, f, k, with_total=True, strategy=s
                    )
                )
                timings[strategy].append((time.perf_counter() - started) * 1000)
                assert page.total is not None
        sub = statistics.median(timings["subquery"])
        win = statistics.median(timings["window"])
        print(f"{name:32} {sub:12.2f} {win:12.2f} {win / sub:15.1f}x")
    await db.dispose()


if __name__ == "__main__":
    asyncio.run(main())
