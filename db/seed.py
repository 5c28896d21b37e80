"""Bulk, realistic data generated inside PostgreSQL (generate_series), in chunks.

A million VODs or chat messages take seconds to a few minutes: rows are produced by the
server in batches of `chunk`, each batch its own transaction, and `progress(n)` is called
after each batch so the CLI can draw a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import Database
from db.tables import users

Progress = Callable[[str, int, int], None]
# What `seed` fills, and ends by vacuuming (bench/vs_postgraphile.py vacuums them too).
SEEDED_TABLES = "users, videos, live_streams, chat_messages"

_WORDS_A = (
    "ARRAY['Speedrun','Tutorial','Review','Live','Unboxing','Highlights','Deep Dive',"
    "'Retro','Cozy','Chaotic','Ranked','Modded','Blind','Final','Ultimate','Casual']"
)
_WORDS_B = (
    "ARRAY['Zelda','Elden Ring','Minecraft','Celeste','Hades','Factorio','Tetris',"
    "'Doom','Portal','Stardew','Chess','Outer Wilds','Hollow Knight','Balatro','Rust']"
)
_WORDS_C = (
    "ARRAY['Part 1','Part 2','Any%','100%','No Commentary','with Friends','Marathon',"
    "'Q&A','Ep. 12','Finale','Day 3','Sub Goal','Late Night','Reaction','Guide']"
)


@dataclass(frozen=True, slots=True)
class SeedCounts:
    users: int = 0
    vods: int = 0
    streams: int = 0
    messages: int = 0


def _noop(_label: str, _done: int, _total: int) -> None:
    return None


async def _chunks(
    db: Database, label: str, total: int, chunk: int, statement: str, progress: Progress
) -> None:
    done = 0
    progress(label, 0, total)
    while done < total:
        n = min(chunk, total - done)

        async def run(conn: AsyncConnection, n: int = n, offset: int = done) -> None:
            await conn.execute(text(statement), {"n": n, "offset": offset})

        await db.write(run)
        done += n
        progress(label, done, total)


async def ensure_user(db: Database, *, username: str, role: str) -> int:
    async def run(conn: AsyncConnection) -> int:
        found = (
            await conn.execute(select(users.c.id).where(users.c.username == username))
        ).scalar()
        if found is not None:
            return int(found)
        created = await conn.execute(
            text(
                "INSERT INTO users (username, display_name, role) VALUES (:u, :d, :r) RETURNING id"
            ),
            {"u": username, "d": username.replace("_", " ").title(), "r": role},
        )
        return int(created.scalar_one())

    return await db.write(run)


async def seed(
    db: Database,
    counts: SeedCounts,
    *,
    chunk: int = 50_000,
    hot_stream_share: float = 0.5,
    progress: Progress = _noop,
    user_prefix: str = "creator",
) -> None:
    """Add `counts` rows. VODs, streams and chat need at least one creator to exist."""
    await ensure_user(db, username="admin", role="admin")
    await ensure_user(db, username="viewer", role="viewer")
    suffix = await db.read(lambda conn: _scalar(conn, "SELECT coalesce(max(id), 0) FROM users"))
    await _chunks(
        db,
        "users",
        counts.users,
        chunk,
        f"INSERT INTO users (username, display_name, role) "
        f"SELECT '{user_prefix}_' || {suffix} || '_' || (:offset + g), "
        f"initcap('{user_prefix} ') || (:offset + g), 'creator' "
        f"FROM generate_series(1, :n) AS g",
        progress,
    )
    # Creators as an array once, so each generated row picks an owner in O(1).
    creators = "(SELECT array_agg(id) FROM users WHERE role = 'creator')"
    await _chunks(
        db,
        "vods",
        counts.vods,
        chunk,
        f"""
        WITH c AS (SELECT {creators} AS ids),
        g AS (
          SELECT g, random() AS r, now() - random() * interval '1095 days' AS at,
                 (random() * 1000)::int AS pick
          FROM generate_series(1, :n) AS g
        )
        INSERT INTO videos (owner_id, title, slug, description, status, duration_seconds,
                            width, height, thumbnail_url, created_at, published_at, deleted_at)
        SELECT c.ids[1 + (g.pick * 7919 + g.g) % cardinality(c.ids)],
               ({_WORDS_A})[1 + (random() * 15)::int % 16] || ' ' ||
               ({_WORDS_B})[1 + (random() * 14)::int % 15] || ' ' ||
               ({_WORDS_C})[1 + (random() * 14)::int % 15],
               'vod-' || replace(gen_random_uuid()::text, '-', ''),
               'Recorded in the studio.',
               CASE WHEN g.r < 0.90 THEN 'ready' WHEN g.r < 0.94 THEN 'processing'
                    WHEN g.r < 0.97 THEN 'pending' ELSE 'failed' END,
               CASE WHEN g.r < 0.90 THEN 30 + (random() * 10800)::int ELSE 0 END,
               CASE WHEN g.r < 0.90 THEN (ARRAY[1920, 1280, 3840])[1 + (g.g % 3)] END,
               CASE WHEN g.r < 0.90 THEN (ARRAY[1080, 720, 2160])[1 + (g.g % 3)] END,
               CASE WHEN g.r < 0.90 THEN '/thumbs/' || g.g || '.jpg' END,
               g.at,
               CASE WHEN g.r < 0.90 THEN g.at + interval '20 minutes' END,
               CASE WHEN random() < 0.01 THEN g.at + interval '2 days' END
        FROM g, c
        """,
        progress,
    )
    await _chunks(
        db,
        "streams",
        counts.streams,
        chunk,
        f"""
        WITH c AS (SELECT {creators} AS ids),
        g AS (SELECT g, random() AS r, (random() * 1000)::int AS pick
              FROM generate_series(1, :n) AS g),
        s AS (
          SELECT c.ids[1 + (g.pick * 31 + g.g) % cardinality(c.ids)] AS owner_id, g.g,
                 CASE WHEN g.g % 5 = 1 THEN 'live' WHEN g.g % 5 = 2 THEN 'idle'
                      ELSE 'ended' END AS status,
                 now() - (g.r * interval '30 days') AS started
          FROM g, c
        )
        INSERT INTO live_streams (owner_id, title, slug, status, started_at, ended_at,
                                  vod_video_id, viewer_count_current)
        SELECT s.owner_id,
               ({_WORDS_A})[1 + (random() * 15)::int % 16] || ' ' ||
               ({_WORDS_B})[1 + (random() * 14)::int % 15] || ' stream',
               'live-' || replace(gen_random_uuid()::text, '-', ''),
               s.status,
               CASE WHEN s.status = 'idle' THEN NULL
                    WHEN s.status = 'live' THEN now() - random() * interval '3 hours'
                    ELSE s.started END,
               CASE WHEN s.status = 'ended' THEN s.started + interval '2 hours' END,
               CASE WHEN s.status = 'ended' THEN (
                 SELECT v.id FROM videos v
                 WHERE v.owner_id = s.owner_id AND v.deleted_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM live_streams l WHERE l.vod_video_id = v.id)
                 ORDER BY v.created_at DESC, v.id DESC OFFSET (s.g % 7) LIMIT 1) END,
               CASE WHEN s.status = 'live' THEN (random() * 5000)::int ELSE 0 END
        FROM s
        """,
        progress,
    )
    if counts.messages:
        await _seed_messages(db, counts.messages, chunk, hot_stream_share, progress)
    # What autovacuum would do, but now: fresh statistics (until then the planner sees the
    # old row counts: a deep chat page took 345 ms, not 0.3 ms), and the visibility map,
    # without which a count by index still reads every heap page it covers.
    await db.read(lambda conn: conn.execute(text(f"VACUUM (ANALYZE) {SEEDED_TABLES}")))


async def _seed_messages(
    db: Database, total: int, chunk: int, hot_share: float, progress: Progress
) -> None:
    """`hot_share` of the messages go to the first live stream, the rest across the others."""
    chat_streams = (
        "(SELECT array_agg(id ORDER BY (status <> 'live'), id) FROM live_streams "
        "WHERE status IN ('live', 'ended'))"
    )
    if await db.read(lambda conn: _scalar(conn, f"SELECT {chat_streams} IS NULL")):
        return
    await _chunks(
        db,
        "messages",
        total,
        chunk,
        f"""
        WITH s AS (SELECT {chat_streams} AS ids),
        u AS (SELECT array_agg(id) AS ids FROM users),
        g AS (SELECT g, random() AS r FROM generate_series(1, :n) AS g)
        INSERT INTO chat_messages (stream_id, user_id, body, client_mutation_id, created_at)
        SELECT CASE WHEN g.r < {float(hot_share)} OR cardinality(s.ids) = 1 THEN s.ids[1]
                    ELSE s.ids[2 + (g.g % (cardinality(s.ids) - 1))] END,
               u.ids[1 + (g.g * 7 + :offset) % cardinality(u.ids)],
               (ARRAY['gg','lol','that jump!','hi from Lisbon','PogChamp','first time here',
                      'what keyboard is that?','no way','clip it','lets go'])[1 + g.g % 10],
               'seed-' || replace(gen_random_uuid()::text, '-', ''),
               now() - interval '1 day' + (:offset + g.g) * interval '50 milliseconds'
        FROM g, s, u
        """,
        progress,
    )


async def _scalar(conn: AsyncConnection, sql: str) -> object:
    return (await conn.execute(text(sql))).scalar()


async def is_empty(db: Database) -> bool:
    count = await db.read(lambda conn: _scalar_stmt(conn))
    return count == 0


async def _scalar_stmt(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(users))).scalar_one())
