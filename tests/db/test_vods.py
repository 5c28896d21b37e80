"""The two totalCount strategies agree with each other and with a direct count."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import Database
from db.sql import Access
from db.vods import Keyset, VodFilter, fetch_page
from tests.conftest import make_account
from tests.factories import insert_stream, insert_vods, vod_values


async def test_window_and_subquery_strategies_agree_on_rows_and_totals(db: Database) -> None:
    rng = random.Random(5)
    ada = await make_account(db, "ada", "creator")
    bob = await make_account(db, "bob", "creator")
    rows = [vod_values(rng.choice([ada.id, bob.id]), rng) for _ in range(150)]
    rows += [vod_values(ada.id, rng, deleted_at=rows[0]["created_at"]) for _ in range(6)]
    ids = await insert_vods(db, rows)
    await insert_stream(db, owner_id=bob.id, vod_video_id=ids[0])
    all_rows = list(await db.read(lambda c: c.execute(text("SELECT * FROM videos"))))
    accesses = [Access(ada.id, False), Access(bob.id, False), Access(ada.id, True)]
    filters = [
        VodFilter(),
        VodFilter(status="ready"),
        VodFilter(search="zelda"),
        VodFilter(search="nothing matches"),
        VodFilter(status="failed", search="%"),
    ]
    combos = [
        (access, vod_filter, order, descending, backward)
        for access in accesses
        for vod_filter in filters
        for order in ("created_at", "title", "duration_seconds")
        for descending in (False, True)
        for backward in (False, True)
    ]

    async def check(conn: AsyncConnection, combo: tuple[Any, ...]) -> int:
        access, vod_filter, order, descending, backward = combo
        checked = 0
        for pivot in [None, *rng.sample(all_rows, 4)]:
            bound = None if pivot is None else (pivot._mapping[order], pivot.id)
            keyset = Keyset(
                order=order,
                descending=descending,
                limit=rng.choice([1, 5, 20]),
                after=None if backward else bound,
                before=bound if backward else None,
                backward=backward,
            )
            sub = await fetch_page(
                conn, access, vod_filter, keyset, with_total=True, strategy="subquery"
            )
            win = await fetch_page(
                conn, access, vod_filter, keyset, with_total=True, strategy="window"
            )
            bare = await fetch_page(conn, access, vod_filter, keyset, with_total=False)
            assert [r.id for r in sub.rows] == [r.id for r in win.rows]
            assert [r.id for r in sub.rows] == [r.id for r in bare.rows]
            assert sub.total == win.total
            checked += 1
        return checked

    # One short unit of work per combination: each attempt stays far below its timeout.
    checked = 0
    for combo in combos:
        checked += await db.read(lambda conn, combo=combo: check(conn, combo))
    assert checked == 3 * 5 * 3 * 2 * 2 * 5


async def test_totals_match_a_direct_count(db: Database) -> None:
    rng = random.Random(9)
    ada = await make_account(db, "ada", "creator")
    await insert_vods(db, [vod_values(ada.id, rng) for _ in range(40)])
    direct = (
        await db.read(
            lambda c: c.execute(
                text("SELECT count(*) FROM videos WHERE deleted_at IS NULL AND status = 'ready'")
            )
        )
    ).scalar_one()
    for strategy in ("subquery", "window"):
        page = await db.read(
            lambda c, s=strategy: fetch_page(
                c,
                Access(ada.id, False),
                VodFilter(status="ready"),
                Keyset(order="title", descending=False, limit=3),
                with_total=True,
                strategy=s,
            )
        )
        assert page.total == direct and len(page.rows) == 4
