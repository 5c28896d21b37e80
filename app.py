"""`create_app(settings) -> Starlette` and the `reelgraph` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from db.chat_feed import ChatFeed
from db.embedded import EmbeddedPostgres
from db.engine import Database, create_engine
from db.errors import DatabaseError
from db.ingest import IngestSimulator
from db.retry import RetryPolicy
from db.secrets import server_secret
from middleware import GraphQLHttpGuard
from resolvers.context import Context, Services
from resolvers.live import LiveHealth
from resolvers.pagination import CursorCodec
from schema import build_schema
from schema.limits import Limits
from schema.ratelimit import RateLimiter
from settings import Settings

log = logging.getLogger("reelgraph")


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_retries=settings.db_max_retries,
        base_delay=settings.db_retry_base,
        max_delay=settings.db_retry_cap,
        attempt_timeout=settings.db_attempt_timeout,
        deadline=settings.db_deadline,
    )


def open_database(settings: Settings, url: str) -> Database:
    policy = retry_policy(settings)
    engine = create_engine(
        url,
        policy=policy,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_max_overflow,
        pool_timeout=settings.pool_timeout,
        connect_timeout=settings.db_connect_timeout,
        lock_timeout=settings.db_lock_timeout,
        idle_in_transaction_timeout=settings.db_idle_in_transaction_timeout,
        slow_query=settings.db_slow_query,
    )
    return Database(engine, policy=policy)


def bearer_token(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    # A malformed header is a failed login, not an anonymous request.
    return token.strip() if scheme.lower() == "bearer" else ""


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view; `services` are filled in by the lifespan."""

    def __init__(
        self,
        state: dict[str, Any],
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        schema = build_schema(
            limits=Limits(
                max_depth=settings.max_depth,
                max_aliases=settings.max_aliases,
                max_tokens=settings.max_tokens,
                max_cost=settings.max_cost,
            ),
            limiter=RateLimiter(
                budget=settings.rate_limit_budget, period=settings.rate_limit_period, clock=clock
            ),
            cache_size=settings.graphql_cache_size,
            debug=settings.debug,
        )
        super().__init__(schema, allow_queries_via_get=False, **kwargs)
        self.state = state

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        context = Context(
            services=self.state["services"],
            token=bearer_token(request.headers.get("authorization")),
            client_address=request.client.host if request.client else None,
            response=response if isinstance(response, Response) else None,
        )
        if isinstance(response, Response):
            response.headers["x-request-id"] = context.request_id
        return context

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Starlette:
    """Build the ASGI app. Nothing touches the database until the lifespan starts.

    `clock` and `sleep` drive the rate limiter, the bitrate cache, the health ticks and
    the ingest simulation, so tests can run them on fake time.
    """
    state: dict[str, Any] = {}
    graphql = GraphQLApp(state, settings, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        embedded: EmbeddedPostgres | None = None
        url = settings.database_url
        if url is None:
            embedded = EmbeddedPostgres(settings.data_dir)
            url = await asyncio.to_thread(embedded.start)
        db = open_database(settings, url)
        probe = Database(
            db.engine, policy=RetryPolicy(max_retries=0, attempt_timeout=2.0, deadline=2.0)
        )
        feed: ChatFeed | None = None
        ingest: asyncio.Task[None] | None = None
        try:
            secret = await db.read(lambda conn: server_secret(conn, "cursor"))
            # One LISTEN connection per process fans chat out to its subscribers.
            feed = ChatFeed.for_database(db)
            await feed.start()
            services = Services(
                chat_feed=feed,
                db=db,
                cursors=CursorCodec(secret),
                total_count_strategy=settings.total_count_strategy,  # type: ignore[arg-type]
                live=LiveHealth.create(
                    shards=settings.bitrate_cache_shards,
                    max_entries=settings.bitrate_cache_max_entries,
                    ttl=settings.bitrate_cache_ttl,
                    clock=clock,
                    interval=settings.live_health_interval,
                    sleep=sleep,
                ),
            )
            if settings.live_ingest:
                simulator = IngestSimulator(db, sleep=sleep)
                ingest = asyncio.create_task(simulator.run(), name="live-ingest")
            state["services"] = services
            _app.state.services = services
            state["probe"] = probe
            yield
        finally:
            if ingest is not None:
                ingest.cancel()
                await asyncio.wait([ingest])
                if not ingest.cancelled() and ingest.exception() is not None:
                    log.error("live ingest stopped", exc_info=ingest.exception())
            if feed is not None:
                await feed.close()  # ends every subscription before the pool goes
            await db.dispose()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_request: Request) -> Response:
        probe: Database = state["probe"]
        try:
            await probe.read(lambda conn: conn.exec_driver_sql("SELECT 1"))
        except DatabaseError as exc:
            return JSONResponse({"status": "unavailable", "error": type(exc).__name__}, 503)
        return JSONResponse({"status": "ready"})

    return Starlette(
        routes=[
            Route("/graphql", graphql),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        middleware=[Middleware(GraphQLHttpGuard, max_body_bytes=settings.max_body_bytes)],
        lifespan=lifespan,
    )


# ---------------------------------------------------------------------------------------
# The `reelgraph` command line
# ---------------------------------------------------------------------------------------


def _database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    if settings.database_url is not None:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.data_dir)
    return embedded.start(), embedded


async def _migrate(settings: Settings, url: str) -> None:
    from db.migrate import upgrade

    db = open_database(settings, url)
    try:
        await upgrade(db.engine)
    finally:
        await db.dispose()


def _progress_bar() -> Any:
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(label: str, done: int, total: int) -> None:
        if total == 0:
            return
        bar = bars.get(label)
        if bar is None:
            bar = bars[label] = tqdm(total=total, desc=label, unit="rows", file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


async def _seed(settings: Settings, url: str, counts: Any, *, hot_share: float) -> None:
    from db.seed import seed

    db = open_database(settings, url)
    try:
        await seed(db, counts, progress=_progress_bar(), hot_stream_share=hot_share)
    finally:
        await db.dispose()


async def _create_user(settings: Settings, url: str, name: str, role: str) -> str:
    from db.seed import ensure_user
    from db.users import create_token

    db = open_database(settings, url)
    try:
        user_id = await ensure_user(db, username=name, role=role)
        return await db.write(lambda conn: create_token(conn, user_id=user_id, name="cli"))
    finally:
        await db.dispose()


async def _demo(settings: Settings, url: str) -> dict[str, str]:
    from db.demo import prepare_demo

    db = open_database(settings, url)
    try:
        return await prepare_demo(db, progress=_progress_bar())
    finally:
        await db.dispose()


def _serve(settings: Settings, *, demo: bool, workers: int) -> None:
    import uvicorn

    url, embedded = _database_url(settings)
    try:
        asyncio.run(_migrate(settings, url))
        tokens = asyncio.run(_demo(settings, url)) if demo else {}
        served = settings.with_(database_url=url, live_ingest=settings.live_ingest or demo)
        base = f"http://{settings.host}:{settings.port}"
        print(f"GraphiQL: {base}/graphql", flush=True)
        for role, token in tokens.items():
            print(f'{role:8} token — headers pane: {{"Authorization": "Bearer {token}"}}')
        sys.stdout.flush()
        if workers > 1:
            os.environ["DATABASE_URL"] = url
            if served.live_ingest:  # one worker per tick ingests (an advisory lock)
                os.environ["REELGRAPH_LIVE_INGEST"] = "true"
            uvicorn.run(
                "app:app_from_env",
                factory=True,
                host=settings.host,
                port=settings.port,
                workers=workers,
                log_level="info",
            )
        else:
            uvicorn.run(
                create_app(served), host=settings.host, port=settings.port, log_level="info"
            )
    finally:
        if embedded is not None:
            embedded.stop()


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory app:app_from_env` and multi-worker serving."""
    return create_app(Settings.from_env())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reelgraph", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the GraphQL server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--demo", action="store_true", help="seed demo data, simulate live ingest, print tokens"
    )
    commands.add_parser("migrate", help="apply database migrations")
    seed = commands.add_parser("seed", help="generate bulk data")
    seed.add_argument("--users", type=int, default=0, help="creators to add")
    seed.add_argument("--vods", type=int, default=0)
    seed.add_argument("--streams", type=int, default=0)
    seed.add_argument("--messages", type=int, default=0)
    seed.add_argument(
        "--hot-stream-share",
        type=float,
        default=0.5,
        help="fraction of messages that go to the first live stream (default 0.5)",
    )
    create_user = commands.add_parser("create-user", help="add a user and print a new token")
    create_user.add_argument("name")
    create_user.add_argument("--role", choices=("admin", "creator", "viewer"), required=True)
    commands.add_parser("export-schema", help="print the SDL")
    args = parser.parse_args(argv)

    if args.command == "export-schema":
        sys.stdout.write(export_schema())
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    if args.command == "serve":
        changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        _serve(settings.with_(**changes), demo=args.demo, workers=args.workers)
        return 0
    url, embedded = _database_url(settings)
    try:
        asyncio.run(_migrate(settings, url))
        if args.command == "seed":
            from db.seed import SeedCounts

            counts = SeedCounts(
                users=args.users, vods=args.vods, streams=args.streams, messages=args.messages
            )
            asyncio.run(_seed(settings, url, counts, hot_share=args.hot_stream_share))
        elif args.command == "create-user":
            print(f"created {args.name} ({args.role}); API token:")
            print(asyncio.run(_create_user(settings, url, args.name, args.role)))
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def export_schema() -> str:
    from strawberry.printer import print_schema

    return print_schema(build_schema()) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
