"""One LISTEN connection per process, kept alive across drops.

PostgreSQL delivers a NOTIFY to every session LISTENing on its channel when the sending
transaction commits, so one connection per server process is enough to hear what every
other instance writes. The connection is a dedicated asyncpg connection, not a pooled
one: it lives as long as the process and must never be handed to a query.

`Listener` reconnects with capped exponential backoff (full jitter) whenever the
connection is lost — noticed through asyncpg's termination callback, or through a
periodic `SELECT 1` that catches a silently dead peer — and calls `on_reconnect` after
every reconnection so that its owner can catch up on what was sent during the gap
(notifications are not queued for a session that is not listening).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("reelgraph.db.notify")

Connect = Callable[[], Awaitable[Any]]
OnNotify = Callable[[str, str], None]
OnReconnect = Callable[[], Awaitable[None]]


def listen_connector(
    engine: AsyncEngine, *, application_name: str = "reelgraph-listener", timeout: float = 10.0
) -> Connect:
    """A factory of raw asyncpg connections to the engine's database, outside its pool."""
    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def connect() -> Any:
        return await asyncpg.connect(
            dsn, timeout=timeout, server_settings={"application_name": application_name}
        )

    return connect


class Listener:
    def __init__(
        self,
        connect: Connect,
        *,
        channels: Sequence[str],
        on_notify: OnNotify,
        on_reconnect: OnReconnect,
        ping_interval: float = 15.0,
        ping_timeout: float = 5.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._connect = connect
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._rand = rand
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.connections = 0  # successful LISTENs so far; > 1 means it has reconnected
        self.backend_pid: int | None = None

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    async def start(self, *, wait: float = 10.0) -> None:
        """Start listening; wait up to `wait` seconds for the first LISTEN to succeed.

        If it does not, the server starts anyway and keeps trying in the background.
        """
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="reelgraph-listener")
        try:
            await asyncio.wait_for(self._listening.wait(), wait)
        except TimeoutError:
            log.warning("LISTEN connection not established yet; retrying in the background")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_listening(self) -> None:
        await self._listening.wait()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the supervisor must outlive any failure
                failures += 1
                log.warning("LISTEN connection failed: %s: %s", type(exc).__name__, exc)
            ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** min(failures, 30))
            await self._sleep(self._rand() * ceiling)

    async def _listen_once(self) -> None:
        """Connect, LISTEN and watch the connection until it is lost."""
        conn = await self._connect()
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            for channel in self._channels:
                await conn.add_listener(channel, self._notified)
            self.connections += 1
            self.backend_pid = conn.get_server_pid()
            self._listening.set()
            if self.connections > 1:
                log.info("LISTEN connection re-established; catching up")
                try:
                    await self._on_reconnect()
                except Exception:  # a failed catch-up must not drop a healthy connection
                    log.exception("catch-up after reconnecting failed")
            await self._watch(conn, lost)
            log.warning("LISTEN connection lost; reconnecting")
        finally:
            self._listening.clear()
            self.backend_pid = None
            if not conn.is_closed():
                conn.terminate()

    async def _watch(self, conn: Any, lost: asyncio.Event) -> None:
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._ping_interval)
                return
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), self._ping_timeout)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            self._on_notify(channel, payload)
        except Exception:  # one bad payload must not kill the connection's callbacks
            log.exception("notification handler failed")
