"""`create_app(settings) -> Starlette` and the `reelgraph` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from uvicorn.supervisors import Multiprocess

from cache import ShardedTTLCache
from db.chat_feed import ChatFeed
from db.embedded import EmbeddedPostgres
from db.engine import Database, create_engine
from db.errors import DatabaseError
from db.ingest import IngestSimulator
from db.retry import RetryPolicy
from db.secrets import server_secret
from db.warm import WarmReads
from graphiql import build as build_graphiql
from graphiql import built_assets
from logs import configure_logging, flush_lines, logging_config
from metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from metrics import Metrics, ServerCollector
from middleware import GraphQLHttpGuard, ShortcutApp, StudioCORS
from resolvers.context import Services
from resolvers.live import LiveHealth
from resolvers.pagination import CursorCodec
from schema import build_schema
from settings import Settings
from view import GraphQLApp

log = logging.getLogger("reelgraph")
# At shutdown, how long requests cancelled by uvicorn may take to unwind before the pool
# closes; cancelling a query takes up to about 0.5 s (db/engine.py).
UNWIND_TIMEOUT = 2.0


# Allocations between two young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Leave the startup heap out of every later collection, and collect less often.

    Measured on W3 (bench/vs_postgraphile.py's live dashboard, one core, wrk -c16, 10 s,
    `gc.callbacks` timing): the collector took 11 % of the server's CPU, mostly in full
    collections walking the whole heap built at startup (schema, SQLAlchemy, modules) that
    never becomes garbage. After `gc.freeze()` it took 4 %; with young collections every
    10,000 allocations instead of 700, 1 %. Cyclic garbage is still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


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
        ping_idle=settings.db_ping_idle,
        lock_timeout=settings.db_lock_timeout,
        idle_in_transaction_timeout=settings.db_idle_in_transaction_timeout,
        slow_query=settings.db_slow_query,
    )
    return Database(engine, policy=policy, warm=WarmReads(settings.db_ping_idle))


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    settle_gc: bool = False,
) -> Starlette:
    """Build the ASGI app. Nothing touches the database until the lifespan starts.

    `clock` and `sleep` drive the rate limiter, the bitrate cache, the health ticks and
    the ingest simulation, so tests can run them on fake time. `settle_gc`: the app is
    the process's only one (a server); once started, it calls `settle_garbage_collector`.
    """
    state: dict[str, Any] = {}
    metrics = Metrics()  # this app's own registry: several apps never share a metric
    graphql = GraphQLApp(state, settings, clock=clock, metrics=metrics)
    metrics.watch(
        ServerCollector(
            services=lambda: state.get("services"),
            limiter=graphql.limiter,
            websocket_operations=lambda: metrics.websocket_operations,
        )
    )

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
                tokens=None
                if settings.auth_cache_ttl == 0
                else ShardedTTLCache(
                    max_entries=settings.auth_cache_max_entries,
                    ttl=settings.auth_cache_ttl,
                    clock=clock,
                ),
            )
            if settings.live_ingest:
                simulator = IngestSimulator(db, sleep=sleep)
                ingest = asyncio.create_task(simulator.run(), name="live-ingest")
            state["services"] = services
            _app.state.services = services
            state["probe"] = probe
            if settle_gc:
                settle_garbage_collector()
            yield
        finally:
            # uvicorn gets here once in-flight requests are done (or cancelled after
            # REELGRAPH_SHUTDOWN_TIMEOUT) and it has closed every WebSocket with 1012.
            stopping = time.monotonic()
            flush_lines()  # the operation lines of the loop's last turn, before this one
            log.info(
                "shutdown started: closing the chat feed and the database pool",
                extra={
                    "open_subscriptions": feed.subscriber_count if feed is not None else 0,
                    "requests_in_flight": graphql.in_flight.count,
                },
            )
            # Requests cancelled at the timeout are still unwinding (cancelling their
            # queries): the pool has to outlive them.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(UNWIND_TIMEOUT):
                    await graphql.in_flight.idle()
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
            log.info(
                "shutdown complete",
                extra={"duration_ms": round((time.monotonic() - stopping) * 1000, 3)},
            )

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_request: Request) -> Response:
        probe: Database = state["probe"]
        try:
            await probe.read(lambda conn: conn.exec_driver_sql("SELECT 1"))
        except DatabaseError as exc:
            return JSONResponse({"status": "unavailable", "error": type(exc).__name__}, 503)
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(_request: Request) -> Response:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    middleware = [Middleware(GraphQLHttpGuard, max_body_bytes=settings.max_body_bytes)]
    if settings.cors_origins:
        # Outside the guard: a preflight (OPTIONS) is answered here and never reaches it,
        # and the guard's own refusals (413, 415) carry the CORS headers too.
        middleware.insert(
            0,
            Middleware(
                StudioCORS,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["authorization", "content-type"],
                expose_headers=["x-request-id", "retry-after"],
                max_age=600,
            ),
        )
    return ShortcutApp(
        graphql=graphql,
        max_body_bytes=settings.max_body_bytes,
        cors=bool(settings.cors_origins),
        routes=[
            Route("/graphql", graphql),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            *graphql.graphiql.routes(),
        ],
        middleware=middleware,
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
    url, embedded = _database_url(settings)
    try:
        asyncio.run(_migrate(settings, url))
        tokens = asyncio.run(_demo(settings, url)) if demo else {}
        served = settings.with_(database_url=url, live_ingest=settings.live_ingest or demo)
        base = f"http://{settings.host}:{settings.port}"
        offline = built_assets(settings.graphiql_dir) is not None
        note = "" if offline else " (assets from the CDN: run `reelgraph build-graphiql`)"
        print(f"GraphiQL: {base}/graphql{note}", flush=True)
        for role, token in tokens.items():
            print(f'{role:8} token — headers pane: {{"Authorization": "Bearer {token}"}}')
        sys.stdout.flush()
        options: dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "log_level": "info",
            "log_config": logging_config(settings.log_format),
            "access_log": settings.access_log,
            "timeout_graceful_shutdown": settings.shutdown_timeout,
        }
        if workers > 1:
            os.environ["DATABASE_URL"] = url
            if served.live_ingest:  # one worker per tick ingests (an advisory lock)
                os.environ["REELGRAPH_LIVE_INGEST"] = "true"
            config = uvicorn.Config("app:app_from_env", factory=True, workers=workers, **options)
            _Supervisor(config, sockets=[config.bind_socket()]).run()
        else:
            uvicorn.run(create_app(served, settle_gc=True), **options)
    finally:
        if embedded is not None:
            embedded.stop()


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, except that it stops listening as soon as it exits.

    uvicorn keeps the parent's copy of the listening socket open until every worker has
    drained, so connections made meanwhile are accepted by the kernel and never served.
    Closed here, and by each worker as its shutdown starts, they are refused instead.
    """

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM stop `serve` the way Ctrl+C does, with exit status 0.

    uvicorn shuts down gracefully on SIGTERM, then restores the previous handler and
    raises the signal again; with the default handler that kills the process (status
    -15 / 143), which supervisors report as a failure. As KeyboardInterrupt it ends
    `uvicorn.run` normally (and before serving, it still stops an embedded PostgreSQL).
    """
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory app:app_from_env` and multi-worker serving."""
    settings = Settings.from_env()
    # `serve --workers N` hands uvicorn our log config, applied in every worker; plain
    # `uvicorn --factory` configures uvicorn's loggers only: route everything through ours.
    if not logging.getLogger().handlers:
        configure_logging(settings.log_format)
    return create_app(settings, settle_gc=True)


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
    commands.add_parser(
        "build-graphiql", help="install GraphiQL's assets from the lockfile (npm ci)"
    )
    args = parser.parse_args(argv)

    if args.command == "export-schema":
        sys.stdout.write(export_schema())
        return 0
    if args.command == "build-graphiql":
        return build_graphiql(Settings.from_env().graphiql_dir)

    settings = Settings.from_env()
    configure_logging(settings.log_format)
    if args.command == "serve":
        changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        with _sigterm_as_interrupt():
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
