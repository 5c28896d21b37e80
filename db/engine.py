"""The engine and the one execution path every query takes (`Database.run`).

An attempt is: obtain a connection (checkout), run the whole unit of work on it, commit or
release it. Bounds, from the inside out:

- opening a connection: asyncpg's connect ``timeout`` (``connect_timeout``);
- a pooled connection is checked at checkout: one whose socket has already closed (a
  killed backend, a restarted server) is discarded without a round trip; one that has been
  idle for ``ping_idle`` seconds or more, or that is about to run a write, is pinged with
  the connect bound. One that fails or does not answer is terminated, every older pooled
  connection is discarded with it (the server probably restarted or the network dropped
  them), and a new one is opened. A read on a connection used moments ago skips the ping
  (it would cost a round trip per statement under load): reads are retried if the
  connection turns out to be lost;
- waiting for a free pooled connection: ``pool_timeout``;
- the attempt: ``RetryPolicy.attempt_timeout``, enforced by the client (a scope of
  ``Deadlines``, db/deadlines.py, which behaves as ``asyncio.timeout`` does: it cancels
  the task, which makes asyncpg send a CancelRequest) and backed by the session's server-side
  ``statement_timeout`` one second later, for when the cancel cannot reach the server;
- everything, sleeps included: ``RetryPolicy.deadline``.

A failure during checkout is raised as ``CheckoutFailed``: nothing of the unit of work was
sent, so it is retried for writes too (see ``db/errors.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import await_only

from db.deadlines import Deadlines
from db.errors import (
    Category,
    CheckoutFailed,
    DatabaseTimeoutError,
    DatabaseUnavailableError,
    classify,
)
from db.retry import RetryEvent, RetryPolicy, run_with_retries, statement_timeout_ms
from db.warm import IDLE_FOR, WarmReads

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[T]]

log = logging.getLogger("reelgraph.db")

# How long a timed-out statement's CancelRequest may take before the connection is dropped.
CANCEL_GRACE = 0.5

_FRESH = "reelgraph_fresh"
_CHECKED_IN = "reelgraph_checked_in"
# Set while a write checks out a connection: a write is always pinged first, because a
# write that then loses its connection cannot be retried (its outcome is unknown).
_PING_ALWAYS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "reelgraph_ping_always", default=False
)
_STARTED = "reelgraph_query_started"


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
    connect_timeout: float = 5.0,
    ping_idle: float = 1.0,
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
        # Reads run each statement as its own snapshot, with no BEGIN/ROLLBACK round trip;
        # `Database.run` switches a write's connection to READ COMMITTED for its
        # transaction, and the pool restores this default when the connection returns.
        # (Setting AUTOCOMMIT per read instead cost about 70 µs of CPU per statement.)
        isolation_level="AUTOCOMMIT",
        connect_args={"server_settings": server_settings, "timeout": connect_timeout},
    )
    _ping_on_checkout(engine, timeout=connect_timeout, idle=ping_idle)
    _bound_cancellation(engine, grace=CANCEL_GRACE)
    _log_slow_queries(engine, threshold=slow_query)
    return engine


def _ping_on_checkout(engine: AsyncEngine, *, timeout: float, idle: float) -> None:
    """``pool_pre_ping`` with a time bound.

    SQLAlchemy's own pre-ping waits as long as the ping takes: a pooled connection whose
    peer went silent (a partition, a NAT or load balancer that dropped the flow) would hold
    the attempt until its timeout, and then the next stale connection would do the same.
    Raising ``InvalidatePoolError`` from the ``checkout`` event is SQLAlchemy's documented
    way to make the pool discard the connection, and every older one, and connect anew.
    """

    def connect(_dbapi_connection: Any, record: Any) -> None:
        record.info[_FRESH] = True

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        # A connection `WarmReads` kept between reads has been idle since its last use.
        record.info[_CHECKED_IN] = time.monotonic() - record.info.pop(IDLE_FOR, 0.0)

    def checkout(_dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.pop(_FRESH, False):
            return
        driver = proxy.driver_connection
        if driver.is_closed():
            raise sqlalchemy.exc.InvalidatePoolError("connection closed while pooled")
        recent = time.monotonic() - record.info.get(_CHECKED_IN, 0.0) < idle
        if recent and not _PING_ALWAYS.get():
            return
        try:
            await_only(driver.execute("SELECT 1", timeout=timeout))
        except BaseException as exc:
            # A graceful close would wait for the cancel of a ping that nobody needs.
            driver.terminate()
            if not isinstance(exc, Exception):  # cancelled: the attempt timed out
                raise
            raise sqlalchemy.exc.InvalidatePoolError(
                f"liveness check failed: {type(exc).__name__}"
            ) from exc

    event.listen(engine.sync_engine, "connect", connect)
    event.listen(engine.sync_engine, "checkout", checkout)
    event.listen(engine.sync_engine, "checkin", checkin)


def _bound_cancellation(engine: AsyncEngine, *, grace: float) -> None:
    """Give the CancelRequest of a timed-out statement `grace` seconds, not SQLAlchemy's 2.

    When an attempt times out, asyncpg sends a CancelRequest on a new connection and
    SQLAlchemy invalidates the connection, closing it gracefully: up to 2 s waiting for the
    cancel to be acknowledged. On a healthy network that takes milliseconds; when the
    server cannot be reached it never happens, and the 2 s would be added to the attempt.
    Closing it here first, with a shorter bound, keeps the attempt's end close to its
    timeout; the server's `statement_timeout` stops a query that the cancel missed.
    """

    def error(context: Any) -> None:
        conn = context.connection
        if not isinstance(context.original_exception, asyncio.CancelledError):
            return
        if conn is None or conn.invalidated or conn.closed:
            return
        await_only(close_within(conn.connection.driver_connection, grace))

    event.listen(engine.sync_engine, "handle_error", error)


async def close_within(driver: Any, grace: float) -> None:
    """Close the asyncpg connection of a cancelled statement, giving its CancelRequest
    `grace` seconds; terminate it if that fails or takes longer."""
    try:
        await driver.close(timeout=grace)
    except BaseException:
        driver.terminate()


def _log_slow_queries(engine: AsyncEngine, *, threshold: float) -> None:
    def before(conn: Any, *_: Any) -> None:
        conn.info[_STARTED] = time.perf_counter()

    def report(conn: Any, statement: str | None, *, failed: bool) -> None:
        started = conn.info.pop(_STARTED, None)
        if started is None:
            return
        elapsed = time.perf_counter() - started
        if elapsed > threshold:
            duration_ms = round(elapsed * 1000, 1)
            text = (statement or "")[:200]
            log.warning(
                "slow query (%.1f ms%s): %s",
                duration_ms,
                ", failed" if failed else "",
                text,
                extra={"duration_ms": duration_ms, "statement": text, "failed": failed},
            )

    def after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        report(conn, statement, failed=False)

    def error(context: Any) -> None:
        if context.connection is not None:
            report(context.connection, context.statement, failed=True)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    event.listen(engine.sync_engine, "handle_error", error)


@dataclass(slots=True)
class DatabaseStats:
    """Counters for the /metrics endpoint: retries taken, and units of work that failed
    with a timeout or as unavailable."""

    retries: int = 0
    timeouts: int = 0
    unavailable: int = 0


class Database:
    """Runs units of work on the engine, with retries, timeouts and a total deadline.

    A unit of work is an async function of a connection. `read` runs it outside an explicit
    transaction (AUTOCOMMIT: each statement is its own snapshot) and may retry it after a
    lost connection; `write` runs it in one transaction and never retries a write whose
    outcome is unknown. A retry re-runs the whole unit of work on a fresh checkout.

    `warm`: where a read's connection is kept for the next read, past the pool
    (db/warm.py), within the engine's `ping_idle`; by default none is kept.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        policy: RetryPolicy,
        warm: WarmReads | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.stats = DatabaseStats()
        self.warm = warm if warm is not None else WarmReads(0.0)
        self._checkouts_pending = 0
        self._deadlines = Deadlines()  # the attempts' timeouts, one loop timer for all
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
            conn = await self.warm.take() if readonly else None
            if conn is None:
                if not readonly:
                    await self.warm.lend_to_pool()
                conn = await self._checkout(readonly=readonly)
            clean = False
            try:
                if readonly:
                    result = await work(conn)
                    clean = True
                    return result
                await conn.execution_options(isolation_level="READ COMMITTED")
                async with conn.begin():
                    return await work(conn)
            finally:
                if not (clean and self.warm.keep(conn, checkouts_pending=self._checkouts_pending)):
                    await conn.close()

        try:
            return await run_with_retries(
                attempt,
                policy=self.policy,
                readonly=readonly,
                clock=self._clock,
                sleep=self._sleep,
                rand=self._rand,
                on_retry=self._on_retry,
                timeout_scope=self._deadlines.timeout,
            )
        except DatabaseTimeoutError as exc:
            self.stats.timeouts += 1
            log.warning(
                "database timeout: %s",
                exc,
                extra={"attempts": exc.attempts, "elapsed": exc.elapsed, "kind": exc.kind},
            )
            raise
        except DatabaseUnavailableError as exc:
            self.stats.unavailable += 1
            log.warning(
                "database unavailable: %s",
                exc,
                extra={
                    "attempts": exc.attempts,
                    "elapsed": exc.elapsed,
                    "sqlstate": exc.last_sqlstate,
                },
            )
            raise

    async def _checkout(self, *, readonly: bool) -> AsyncConnection:
        token = None if readonly else _PING_ALWAYS.set(True)
        self._checkouts_pending += 1
        try:
            return await self.engine.connect()
        except Exception as exc:
            if classify(exc, readonly=True).category is Category.FOREIGN:
                raise
            raise CheckoutFailed(exc) from exc
        finally:
            self._checkouts_pending -= 1
            if token is not None:
                _PING_ALWAYS.reset(token)

    def _on_retry(self, event: RetryEvent) -> None:
        self.stats.retries += 1
        error = event.error.error if isinstance(event.error, CheckoutFailed) else event.error
        log.warning(
            "database retry: attempt %d failed (%s, sqlstate %s); retrying in %.3f s",
            event.attempt,
            type(error).__name__,
            event.sqlstate,
            event.delay,
            extra={
                "attempt": event.attempt,
                "delay": round(event.delay, 4),
                "elapsed": round(event.elapsed, 4),
                "sqlstate": event.sqlstate,
                "category": event.category.value,
                "error": type(error).__name__,
                "checkout": isinstance(event.error, CheckoutFailed),
            },
        )

    def pool_counts(self) -> tuple[int, int] | None:
        """(in use, idle) pooled connections, the kept ones counted idle; None for a pool
        that does not count them."""
        pool = self.engine.pool
        if not isinstance(pool, QueuePool):
            return None
        kept = len(self.warm)
        return pool.checkedout() - kept, pool.checkedin() + kept

    async def dispose(self) -> None:
        await self.warm.close()
        await self.engine.dispose()
