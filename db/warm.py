"""Read connections kept checked out between reads, for reuse without a pool round.

A checkout and a check-in through SQLAlchemy's pool cost about 37 µs of CPU together (two
greenlet switches, a `Connection`, the pool's events and reset), a tenth of a list
request. `Database.read` keeps the connection of a read that ended cleanly here instead,
and the next read takes it back in about 1 µs. Reuse is limited to what the pool itself
would do without a round trip:

- only within `window` (the engine's `ping_idle`) of its last use, the span in which the
  pool's checkout would not ping it either (db/engine.py). Older ones go back to the pool
  with how long they have been idle (`IDLE_FOR`), so its next checkout pings them as it
  would have; a window of 0 (every checkout pings) keeps nothing;
- not one whose asyncpg connection has closed (a killed backend, a restarted server): it
  is invalidated, as the pool's checkout discards it;
- only after a read whose work returned, on a connection that is still valid and holds no
  SQLAlchemy transaction (the direct reads of db/direct.py never begin one);
- never while a checkout is in progress: a released connection then goes back to the pool,
  where a waiting checkout gets it. A write (`lend_to_pool`) first returns one kept
  connection to the pool, so connections kept idle never make it wait.

The pool still counts kept connections as checked out; `Database.pool_counts` reports them
as idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

# `conn.info` (the pooled connection's record) key: how long a kept connection had been
# idle when it went back to the pool, which the pool's check-in listener counts.
IDLE_FOR = "reelgraph_idle_for"


class WarmReads:
    def __init__(self, window: float, *, now: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._now = now
        self._idle: list[tuple[AsyncConnection, float]] = []  # oldest first
        self._closed = False

    def __len__(self) -> int:
        return len(self._idle)

    async def take(self) -> AsyncConnection | None:
        """The most recently used kept connection, if any is still within the window."""
        idle = self._idle
        if not idle:
            return None
        now = self._now()
        if now - idle[0][1] >= self.window:  # the oldest went stale: back to the pool
            await self._release_stale(now)
        while idle:
            conn, _ = idle.pop()
            if not _closed(conn):
                return conn
            await conn.invalidate()  # as the pool's checkout discards a closed one
            await conn.close()
        return None

    def keep(self, conn: AsyncConnection, *, checkouts_pending: int) -> bool:
        """Keep the connection of a read that ended cleanly: False to close it instead."""
        if (
            self._closed
            or checkouts_pending
            or self.window <= 0
            or conn.closed
            or conn.invalidated
            or conn.in_transaction()
        ):
            return False
        self._idle.append((conn, self._now()))
        return True

    async def lend_to_pool(self) -> None:
        """Return one kept connection to the pool, for a checkout that must not wait."""
        if self._idle:
            await self._release(*self._idle.pop(0))

    async def close(self) -> None:
        """Return every kept connection to the pool, and keep none from now on."""
        self._closed = True
        while self._idle:
            await self._release(*self._idle.pop())

    async def _release_stale(self, now: float) -> None:
        idle = self._idle
        while idle and now - idle[0][1] >= self.window:
            await self._release(*idle.pop(0))

    async def _release(self, conn: AsyncConnection, since: float) -> None:
        if not conn.invalidated:
            conn.info[IDLE_FOR] = self._now() - since
        await conn.close()


def _closed(conn: AsyncConnection) -> bool:
    """Whether the kept connection's asyncpg connection has closed (no round trip)."""
    sync = conn.sync_connection
    raw: Any = None if sync is None else sync._dbapi_connection
    return raw is None or bool(raw.driver_connection.is_closed())
