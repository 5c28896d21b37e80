"""An admin's view of the server under test: its own connection, pg_stat_activity, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg  # type: ignore[import-untyped, unused-ignore]
from sqlalchemy.engine import make_url


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL (TCP or ``?host=/socket/dir``) as a DSN for ``asyncpg.connect``."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_name(url: str) -> str:
    name = make_url(url).database
    assert name is not None
    return name


async def admin_connect(url: str) -> asyncpg.Connection:
    """A connection that the app's backends can be told apart from (application_name)."""
    return await asyncpg.connect(
        asyncpg_dsn(url), timeout=5, server_settings={"application_name": "reelgraph-admin"}
    )


async def app_backends(admin: asyncpg.Connection, database: str, *, where: str = "true") -> int:
    """How many of the app's backends on ``database`` match ``where``."""
    count = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
        f" AND application_name = 'reelgraph' AND ({where})",
        database,
    )
    return int(count)


async def terminate_app_backends(admin: asyncpg.Connection, database: str) -> int:
    killed = await admin.fetchval(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = $1 AND application_name = 'reelgraph'",
        database,
    )
    return int(killed)


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], *, within: float, interval: float = 0.02
) -> float:
    """Poll ``check`` (plain or async) until it holds; return how long that took. Fails
    after ``within``."""
    started = time.monotonic()
    while not await _holds(check):
        if time.monotonic() - started > within:
            name = getattr(check, "__name__", "condition")
            raise AssertionError(f"{name} not met within {within} s")
        await asyncio.sleep(interval)
    return time.monotonic() - started


async def _holds(check: Callable[[], Awaitable[bool] | bool]) -> bool:
    done = check()
    return done if isinstance(done, bool) else await done
