"""Graceful shutdown on SIGTERM, with real `reelgraph serve` processes and a real PostgreSQL.

A request is made slow for real: another session holds an ACCESS EXCLUSIVE lock on
`videos`, so a `vods` query waits in PostgreSQL until the lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from websockets.exceptions import ConnectionClosedError

from db.engine import Database
from resolvers.ids import encode_id
from tests.conftest import make_account
from tests.db.admin import eventually
from tests.factories import insert_stream, insert_vods, vod_values
from tests.test_cli import Server, serve
from tests.wsclient import graphql_ws

SHUTDOWN_TIMEOUT = 10
VODS = "{ vods(first: 3) { totalCount nodes { title } } }"
HEALTH = """subscription($streamId: ID!) {
  liveStreamHealth(streamId: $streamId) { viewerCount } }"""
CHAT = """subscription($streamId: ID!) { chatMessageAdded(streamId: $streamId) { body } }"""
SEND = """mutation($input: SendChatMessageInput!) {
  sendChatMessage(input: $input) { errors { code } } }"""


async def exit_code(server: Server, *, within: float) -> int:
    def exited() -> bool:
        return server.process.poll() is not None

    await eventually(exited, within=within)
    return server.process.returncode


@contextlib.asynccontextmanager
async def videos_locked(database_url: str) -> AsyncIterator[AsyncConnection]:
    """Hold ACCESS EXCLUSIVE on `videos` until the block exits."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn, conn.begin():
            await conn.execute(text("LOCK TABLE videos IN ACCESS EXCLUSIVE MODE"))
            yield conn
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def slow_vods(
    http: httpx.AsyncClient, lock: AsyncConnection, token: str
) -> AsyncIterator[asyncio.Task[httpx.Response]]:
    """A `vods` request, yielded once PostgreSQL shows it waiting for the lock; it is
    cancelled only when the block fails."""
    request = asyncio.create_task(
        http.post("/graphql", json={"query": VODS}, headers={"Authorization": f"Bearer {token}"})
    )

    async def vods_waits_on_the_lock() -> bool:
        result = await lock.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE relation = 'videos'::regclass AND NOT granted"
            )
        )
        return bool(result.scalar_one() == 1)

    try:
        await eventually(vods_waits_on_the_lock, within=10)
        yield request
    except BaseException:
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
        raise


async def seed(db: Database) -> tuple[str, str]:
    """An admin's token and one of the admin's live streams; five VODs."""
    admin = await make_account(db, "root", "admin")
    rng = random.Random(1)
    await insert_vods(db, [vod_values(admin.id, rng) for _ in range(5)])
    stream = await insert_stream(db, owner_id=admin.id, status="live")
    return admin.token, encode_id("LiveStream", stream)


def assert_clean_exit(server: Server, *, workers: int) -> None:
    output = server.output()
    assert "Traceback" not in output, output
    # Each process logs the start and the end of its shutdown; every subscription had
    # ended (its WebSocket closed) before the lifespan shut down.
    logged = [
        (r["message"], r.get("open_subscriptions"), r.get("requests_in_flight"))
        for r in server.records("reelgraph")
    ]
    started = ("shutdown started: closing the chat feed and the database pool", 0, 0)
    complete = ("shutdown complete", None, None)
    assert Counter(logged) == {started: workers, complete: workers}, output
    assert logged[0] == started and logged[-1] == complete


async def assert_drained(server: Server, signalled: float, *, workers: int) -> None:
    """Exited 0 within the shutdown timeout of the SIGTERM, with a clean log."""
    assert await exit_code(server, within=SHUTDOWN_TIMEOUT) == 0, server.output()
    assert time.monotonic() - signalled < SHUTDOWN_TIMEOUT
    assert_clean_exit(server, workers=workers)


async def test_sigterm_drains_requests_closes_subscriptions_and_exits_0(
    database_url: str, db: Database
) -> None:
    token, stream = await seed(db)
    settings = {
        "REELGRAPH_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        "REELGRAPH_LIVE_HEALTH_INTERVAL": "600",  # one health event, then nothing
    }
    with serve(database_url, **settings) as server:
        ws_url = f"ws://127.0.0.1:{server.port}/graphql"
        async with (
            graphql_ws(ws_url, token) as ws,
            httpx.AsyncClient(base_url=server.base, timeout=30) as http,
        ):
            await ws.subscribe("health", HEALTH, {"streamId": stream})
            assert (await ws.receive())["id"] == "health"
            await ws.subscribe("chat", CHAT, {"streamId": stream})
            # No acknowledgement exists for a subscription: send until one arrives.
            for attempt in range(20):
                sent = {"streamId": stream, "body": "hi", "clientMutationId": str(attempt)}
                response = await http.post(
                    "/graphql",
                    json={"query": SEND, "variables": {"input": sent}},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.json() == {"data": {"sendChatMessage": {"errors": []}}}
                with contextlib.suppress(TimeoutError):
                    event = await ws.receive(within=1.0)
                    assert event["id"] == "chat" and event["type"] == "next", event
                    break
            else:
                raise AssertionError("the chat subscription never received a message")

            async with (
                videos_locked(database_url) as lock,
                slow_vods(http, lock, token) as request,
            ):
                signalled = time.monotonic()
                server.process.send_signal(signal.SIGTERM)

                # Subscriptions end at once, not after the drain: uvicorn sends a close
                # frame 1012 (service restart) and no graphql-transport-ws `complete`, so
                # clients reconnect and resubscribe rather than take the stream as over.
                with pytest.raises(ConnectionClosedError) as closed:
                    message = await ws.receive(within=5)
                    raise AssertionError(f"a message instead of the close: {message}")
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1012, "")

                await eventually(server.refuses_connections, within=5)
                assert not request.done() and server.process.poll() is None
            # The lock is gone: the request that was in flight finishes with its data.
            response = await request
            assert response.status_code == 200, response.text
            assert response.headers["connection"] == "close"
            body: dict[str, Any] = response.json()
            assert body["data"]["vods"]["totalCount"] == 5
            assert len(body["data"]["vods"]["nodes"]) == 3
            assert "errors" not in body

        await assert_drained(server, signalled, workers=1)


async def test_with_workers_sigterm_to_the_parent_drains_every_worker_and_exits_0(
    database_url: str, db: Database
) -> None:
    token, _ = await seed(db)
    with serve(
        database_url, "--workers", "2", REELGRAPH_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT)
    ) as server:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
            async with (
                videos_locked(database_url) as lock,
                slow_vods(http, lock, token) as request,
            ):
                signalled = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                # Also the parent's copy of the listening socket is closed.
                await eventually(server.refuses_connections, within=5)
                assert not request.done() and server.process.poll() is None
            response = await request
            assert response.status_code == 200, response.text
            assert response.json()["data"]["vods"]["totalCount"] == 5

        await assert_drained(server, signalled, workers=2)


async def test_a_request_that_outlasts_the_shutdown_timeout_is_cut_off(
    database_url: str, db: Database
) -> None:
    token, _ = await seed(db)
    timeout = 1
    with serve(database_url, REELGRAPH_SHUTDOWN_TIMEOUT=str(timeout)) as server:
        async with (
            httpx.AsyncClient(base_url=server.base, timeout=30) as http,
            videos_locked(database_url) as lock,
            slow_vods(http, lock, token) as request,
        ):
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            code = await exit_code(server, within=timeout + 5)
            elapsed = time.monotonic() - signalled
            response = await request

        output = server.output()
        assert code == 0, output
        assert timeout <= elapsed < timeout + 5
        # uvicorn cancels the request's task and answers 500 for it; the lifespan lets
        # the cancelled request unwind (its query cancelled, its operation logged) before
        # it closes the pool.
        assert response.status_code == 500
        messages = [(r["logger"], r["message"]) for r in server.records()]
        cut = ("uvicorn.error", "Cancel 1 running task(s), timeout graceful shutdown exceeded")
        [started] = [
            r for r in server.records("reelgraph") if r["message"].startswith("shutdown s")
        ]
        assert started["requests_in_flight"] == 1
        operation = ("reelgraph.operations", "graphql operation")
        complete = ("reelgraph", "shutdown complete")
        assert messages.index(cut) < messages.index(operation) < messages.index(complete), output


@pytest.mark.skipif(os.environ.get("REELGRAPH_SKIP_EMBEDDED") == "1", reason="opted out")
async def test_sigterm_stops_the_embedded_postgresql(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve(None, REELGRAPH_DATA_DIR=str(data)) as server:
        assert (data / "postmaster.pid").exists()
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert await exit_code(server, within=SHUTDOWN_TIMEOUT + 20) == 0, server.output()
        print(f"embedded: exited {time.monotonic() - signalled:.2f} s after SIGTERM")
        assert_clean_exit(server, workers=1)
    # PostgreSQL removes its pid file when it has shut down.
    assert not (data / "postmaster.pid").exists()
