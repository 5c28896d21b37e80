"""The engine and the one execution path every query takes (`Database.run`)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from db.retry import RetryPolicy, run_with_retries, statement_timeout_ms

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[T]]

log = logging.getLogger("reelgraph.db")


def normalise_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` URLs; always use the asyncpg driver."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    policy: RetryPolicy,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 10.0,
    lock_timeout: float = 10.0,
    idle_in_transaction_timeout: float = 60.0,
    application_name: str = "reelgraph",
    slow_query: float = 1.0,
) -> AsyncEngine:
    server_settings = {
        # Just above the client's per-attempt timeout: the server stops the query even if
        # the client's cancel request never arrives.
        "statement_timeout": str(statement_timeout_ms(policy)),
        "lock_timeout": str(int(lock_timeout * 1000)),
        "idle_in_transaction_session_timeout": str(int(idle_in_transaction_timeout * 1000)),
        "application_name": application_name,
    }
    engine = create_async_engine(
        normalise_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        connect_args={"server_settings": server_settings, "timeout": policy.attempt_timeout},
    )
    _log_slow_queries(engine, threshold=slow_query)
    return engine


def _log_slow_queries(engine: AsyncEngine, *, threshold: float) -> None:
    def before(conn: Any, *_: Any) -> None:
        conn.info.setdefault("query_started", []).append(time.perf_counter())

    def after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        elapsed = time.perf_counter() - conn.info["query_started"].pop()
        if elapsed > threshold:
            log.warning(
                "slow query",
                extra={"duration_ms": round(elapsed * 1000, 1), "statement": statement[:200]},
            )

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)


class Database:
    """Runs units of work on the engine, with retries, timeouts and a total deadline.

    A unit of work is an async function of a connection. `read` runs it outside an explicit
    transaction (each statement is its own snapshot) and may retry it after a lost
    connection; `write` runs it in one transaction and never retries a write whose outcome
    is unknown.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self._clock = clock
        self._sleep = sleep
        self._rand = rand

    async def read(self, work: Work[T]) -> T:
        return await self.run(work, readonly=True)

    async def write(self, work: Work[T]) -> T:
        return await self.run(work, readonly=False)

    async def run(self, work: Work[T], *, readonly: bool) -> T:
        """The single execution function: every query of the server passes through here."""

        async def attempt() -> T:
            if readonly:
                async with self.engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    return await work(conn)
            async with self.engine.begin() as conn:
                return await work(conn)

        return await run_with_retries(
            attempt,
            policy=self.policy,
            readonly=readonly,
            clock=self._clock,
            sleep=self._sleep,
            rand=self._rand,
        )

    async def dispose(self) -> None:
        await self.engine.dispose()
