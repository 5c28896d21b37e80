"""Live chat: keyset page latency at any depth, and cross-instance subscription fan-out.

Usage:
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/rg_bench python bench/chat.py \\
        [--messages 1000000] [--iterations 21] [--fanout 200] [--subscribers 1,20]

Data: the chattiest stream must hold `--messages` live messages. If it holds fewer, the
bench builds what is missing the way `reelgraph seed ... --messages N --hot-stream-share
1.0` does (creators and streams first if there are none; migrations only on an empty
database), so a fresh database works but the first run takes about two minutes.
It adds an admin `bench-admin` with a new token, and the fan-out part adds its messages
to that stream; nothing is deleted or rewritten.

1. Pages, through the whole GraphQL stack in-process (ASGI, auth, resolvers, asyncpg):
   the first page and a page 500,000 messages deep (`first: 50, after:` a cursor there),
   and the same deep position paged backward; median and p95. Ratio deep / first.
   The same two positions at the SQL level, and the OFFSET query keyset paging avoids
   (`OFFSET 500000 LIMIT 51`) as the baseline: ratio OFFSET / keyset.
2. Fan-out: two uvicorn processes on the database; subscribers on the first, messages
   sent one by one over HTTP to the second; latency from before the send until the
   (last) subscriber has the message; p50 / p99 / max.

Prints figures only; never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from websockets.asyncio.client import connect

from app import create_app
from db.chat import ChatKeyset, fetch_page
from db.engine import Database, create_engine
from db.migrate import upgrade
from db.retry import RetryPolicy
from db.secrets import server_secret
from db.seed import SeedCounts, ensure_user, seed
from db.sql import Access
from db.users import create_token
from resolvers.ids import encode_id
from resolvers.pagination import CursorCodec
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PAGE = 50
DEPTH = 500_000
PAGE_QUERY = """query($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  node(id: $id) { ... on LiveStream {
    chatMessages(first: $first, after: $after, last: $last, before: $before) {
      edges { cursor node { id body createdAt author { username } } }
      pageInfo { hasNextPage hasPreviousPage } } } } }"""
SEND = """mutation($input: SendChatMessageInput!) {
  sendChatMessage(input: $input) { message { id } errors { code } } }"""
SUBSCRIBE = """subscription($streamId: ID!) {
  chatMessageAdded(streamId: $streamId) { id body author { username } } }"""


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


async def _scalar(db: Database, sql: str, **params: Any) -> Any:
    return (await db.read(lambda c: c.execute(text(sql), params))).scalar()


async def prepare(db: Database, wanted: int) -> tuple[int, int]:
    """(hot stream id, its live messages), building missing data first."""
    if not await _scalar(db, "SELECT to_regclass('chat_messages') IS NOT NULL"):
        await upgrade(db.engine)
    hottest = (
        "SELECT stream_id, count(*) FROM chat_messages WHERE deleted_at IS NULL "
        "GROUP BY stream_id ORDER BY 2 DESC LIMIT 1"
    )
    row = (await db.read(lambda c: c.execute(text(hottest)))).first()
    have = 0 if row is None else int(row[1])
    if have < wanted:
        print(f"building data: {wanted - have:,} messages into the first live stream ...")
        creators = await _scalar(db, "SELECT count(*) FROM users WHERE role = 'creator'")
        live = await _scalar(db, "SELECT count(*) FROM live_streams WHERE status = 'live'")
        counts = SeedCounts(
            users=0 if creators else 1000,
            streams=0 if live else 100,
            messages=wanted - have,
        )
        await seed(db, counts, hot_stream_share=1.0)
        await db.write(lambda c: c.execute(text("ANALYZE chat_messages")))
        row = (await db.read(lambda c: c.execute(text(hottest)))).first()
    assert row is not None
    return int(row[0]), int(row[1])


async def timed(n: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def bench_pages(url: str, db: Database, stream: int, token: str, iterations: int) -> None:
    codec = CursorCodec(await db.read(lambda c: server_secret(c, "cursor")))
    deep_id = int(
        await _scalar(
            db,
            "SELECT id FROM chat_messages WHERE stream_id = :s AND deleted_at IS NULL "
            "ORDER BY stream_id, id DESC OFFSET :d LIMIT 1",
            s=stream,
            d=DEPTH - 1,
        )
    )
    cursor = codec.encode(f"chat:{stream}", [deep_id])
    stream_gid = encode_id("LiveStream", stream)
    settings = Settings(database_url=url, rate_limit_budget=10**9)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

            async def page(**args: Any) -> None:
                response = await http.post(
                    "/graphql",
                    json={"query": PAGE_QUERY, "variables": {"id": stream_gid, **args}},
                    headers={"Authorization": f"Bearer {token}"},
                )
                edges = response.json()["data"]["node"]["chatMessages"]["edges"]
                assert len(edges) == PAGE, response.text

            scenarios: dict[str, Callable[[], Awaitable[Any]]] = {
                "GraphQL first page": lambda: page(first=PAGE),
                f"GraphQL page {DEPTH:,} deep (first/after)": lambda: page(
                    first=PAGE, after=cursor
                ),
                f"GraphQL page {DEPTH:,} deep (last/before)": lambda: page(
                    last=PAGE, before=cursor
                ),
            }
            for call in scenarios.values():  # warm up: plans, pool, token lookup
                await call()
            results = {name: await timed(iterations, call) for name, call in scenarios.items()}

    admin = Access(user_id=0, is_admin=True)

    def sql_page(after: int | None) -> Callable[[], Awaitable[Any]]:
        keyset = ChatKeyset(stream_id=stream, limit=PAGE, after=after)
        return lambda: db.read(lambda c: fetch_page(c, admin, keyset))

    offset_sql = text(
        "SELECT id, stream_id, user_id, body, created_at FROM chat_messages "
        "WHERE stream_id = :s AND deleted_at IS NULL ORDER BY id DESC OFFSET :d LIMIT :n"
    )

    async def offset_page() -> None:
        await db.read(lambda c: c.execute(offset_sql, {"s": stream, "d": DEPTH, "n": PAGE + 1}))

    sql_scenarios: dict[str, Callable[[], Awaitable[Any]]] = {
        "SQL keyset, first page": sql_page(None),
        f"SQL keyset, {DEPTH:,} deep": sql_page(deep_id),
        f"SQL OFFSET {DEPTH:,} (baseline)": offset_page,
    }
    for run in sql_scenarios.values():
        await run()
    offset_iterations = max(3, iterations // 4)
    for name, run in sql_scenarios.items():
        n = offset_iterations if "OFFSET" in name else iterations
        results[name] = await timed(n, run)

    print(f"\n{'page latency (page size 50)':44} {'median ms':>10} {'p95 ms':>8}")
    for name, samples in results.items():
        median, p95 = _ms(samples)
        print(f"{name:44} {median:10.2f} {p95:8.2f}")
    med = {name: statistics.median(s) for name, s in results.items()}
    names = list(results)
    print(f"ratio deep/first, GraphQL (first/after): {med[names[1]] / med[names[0]]:.2f}x")
    print(f"ratio deep/first, GraphQL (last/before): {med[names[2]] / med[names[0]]:.2f}x")
    print(f"ratio deep/first, SQL keyset: {med[names[4]] / med[names[3]]:.2f}x")
    print(f"ratio OFFSET baseline / keyset at {DEPTH:,} deep: {med[names[5]] / med[names[4]]:.0f}x")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(url: str) -> Any:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELGRAPH_")}
    env.update(DATABASE_URL=url, REELGRAPH_RATE_LIMIT_BUDGET=str(10**9))
    command = [sys.executable, "-m", "uvicorn", "--factory", "app:app_from_env"]
    command += ["--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            assert process.poll() is None, "server exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@contextlib.asynccontextmanager
async def subscriber(url: str, token: str, stream: str) -> AsyncIterator[Any]:
    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": SUBSCRIBE, "variables": {"streamId": stream}},
                }
            )
        )
        yield ws


async def bench_fanout(
    url: str, stream: int, token: str, messages: int, subscriber_counts: list[int]
) -> None:
    stream_gid = encode_id("LiveStream", stream)
    run = time.time_ns()
    print(
        f"\n{'fan-out, send -> receive (2 processes)':44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    with server(url) as first, server(url) as second:
        ws_url = first.replace("http://", "ws://") + "/graphql"
        async with httpx.AsyncClient(base_url=second, timeout=30) as http:
            sent = 0

            async def send() -> str:
                nonlocal sent
                sent += 1
                key = f"bench-{run}-{sent}"
                response = await http.post(
                    "/graphql",
                    json={
                        "query": SEND,
                        "variables": {
                            "input": {"streamId": stream_gid, "body": key, "clientMutationId": key}
                        },
                    },
                    headers={"Authorization": f"Bearer {token}"},
                )
                payload = response.json()["data"]["sendChatMessage"]
                assert payload["errors"] == [], payload
                return str(payload["message"]["id"])

            async def received(ws: Any, message_id: str) -> None:
                while True:
                    event = json.loads(await ws.recv())
                    if event["payload"]["data"]["chatMessageAdded"]["id"] == message_id:
                        return

            for count in subscriber_counts:
                async with contextlib.AsyncExitStack() as stack:
                    sockets = [
                        await stack.enter_async_context(subscriber(ws_url, token, stream_gid))
                        for _ in range(count)
                    ]
                    # No "subscribed" acknowledgement in the protocol: warm up until all hear.
                    for _ in range(50):
                        warm = await send()
                        try:
                            await asyncio.wait_for(
                                asyncio.gather(*(received(ws, warm) for ws in sockets)), 2
                            )
                            break
                        except TimeoutError:
                            continue
                    samples = []
                    for _ in range(messages):
                        started = time.perf_counter()
                        message_id = await send()
                        await asyncio.gather(*(received(ws, message_id) for ws in sockets))
                        samples.append((time.perf_counter() - started) * 1000)
                    ordered = sorted(samples)
                    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
                    name = f"{count} subscriber(s), {messages} messages"
                    print(
                        f"{name:44} {statistics.median(ordered):8.1f} {p99:8.1f} {ordered[-1]:8.1f}"
                    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=21)
    parser.add_argument("--fanout", type=int, default=200)
    parser.add_argument("--subscribers", default="1,20")
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    policy = RetryPolicy(attempt_timeout=600, deadline=None)
    db = Database(create_engine(url, policy=policy), policy=policy)
    try:
        stream, live = await prepare(db, args.messages)
        total = await _scalar(db, "SELECT count(*) FROM chat_messages")
        admin_id = await ensure_user(db, username="bench-admin", role="admin")
        token = await db.write(lambda c: create_token(c, user_id=admin_id, name="bench"))
        print(
            f"dataset: {total:,} chat messages, {live:,} of them live in stream {stream} "
            f"(page size {PAGE}, {args.iterations} runs per page scenario)"
        )
        await bench_pages(url, db, stream, token, args.iterations)
    finally:
        await db.dispose()
    subscribers = [int(n) for n in args.subscribers.split(",") if n]
    await bench_fanout(url, stream, token, args.fanout, subscribers)


if __name__ == "__main__":
    asyncio.run(main())
