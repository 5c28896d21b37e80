"""The small, realistic dataset of `serve --demo`, and one fresh token per role."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import Database
from db.seed import Progress, SeedCounts, ensure_user, is_empty, seed
from db.users import create_token

CREATORS = ("ada", "grace", "linus", "margaret", "alan")


async def prepare_demo(db: Database, *, progress: Progress) -> dict[str, str]:
    """Seed when the database is empty; return {role: token} for admin, creator, viewer."""
    if await is_empty(db):
        for name in CREATORS:
            await ensure_user(db, username=name, role="creator")
        await seed(
            db, SeedCounts(vods=3000, streams=12, messages=5000), progress=progress, chunk=5000
        )
    tokens: dict[str, str] = {}
    for role, name in (("admin", "admin"), ("creator", CREATORS[0]), ("viewer", "viewer")):
        user_id = await ensure_user(db, username=name, role=role)

        async def issue(conn: AsyncConnection, user_id: int = user_id) -> str:
            return await create_token(conn, user_id=user_id, name="demo")

        tokens[role] = await db.write(issue)
    return tokens
