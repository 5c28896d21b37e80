"""What the per-operation record (metrics sample + log line) costs a request.

Run: DATABASE_URL=postgresql://... python bench/observability.py [--log json|text|off]

Drives the whole ASGI app in process (httpx ASGITransport, no sockets) with a small query,
in rounds of 2,000 requests that alternate between GraphQLApp's `execute_single` (which
records the operation) and Strawberry's own (the baseline, recording nothing), and prints
the medians of CPU time per request (the query needs no database) and their difference.
With `--log json` or `text`, logging is configured as `reelgraph serve` does (httpx's own
request lines silenced) and stderr should go to a file (`2>/tmp/ops.log`), as in
production; `off` leaves logging unconfigured, so the line is skipped at its level check.
Prints figures; never passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time

import httpx
from sqlalchemy.ext.asyncio import create_async_engine
from strawberry.asgi import GraphQL

import app as reelgraph
from db.engine import normalise_url
from db.migrate import upgrade
from logs import configure_logging
from settings import Settings

QUERIES = {
    "anonymous `{ __typename }`": "{ __typename }",
    "named `query Ping { __typename }`": "query Ping { __typename }",
}
REQUESTS = 2_000
ROUNDS = 10  # per variant, alternated
RECORDING = reelgraph.GraphQLApp.execute_single


async def timed(http: httpx.AsyncClient, body: dict[str, str], n: int) -> float:
    started = time.process_time()  # this process's CPU: less noise from a busy machine
    for _ in range(n):
        response = await http.post("/graphql", json=body)
    assert response.status_code == 200, response.text
    return (time.process_time() - started) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", choices=("off", "json", "text"), default="off")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/rg_bench")
    engine = create_async_engine(normalise_url(url))
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    if args.log != "off":
        configure_logging(args.log)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # the client's, not the server's
    app = reelgraph.create_app(Settings(database_url=url, rate_limit_budget=10**9))
    print(f"{REQUESTS} requests x {ROUNDS} rounds per variant, log {args.log}; CPU us/request")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        for title, query in QUERIES.items():
            body = {"query": query}
            await timed(http, body, 500)  # warm-up: caches, pool
            figures: dict[str, list[float]] = {"baseline": [], "recording": []}
            for i in range(2 * ROUNDS):
                variant = ("baseline", "recording")[(i + i // 2) % 2]  # ABBA order
                reelgraph.GraphQLApp.execute_single = (  # type: ignore[method-assign]
                    GraphQL.execute_single if variant == "baseline" else RECORDING
                )
                figures[variant].append(await timed(http, body, REQUESTS))
            reelgraph.GraphQLApp.execute_single = RECORDING  # type: ignore[method-assign]
            base = statistics.median(figures["baseline"])
            rec = statistics.median(figures["recording"])
            print(
                f"{title}: baseline {base:.1f}, recording {rec:.1f}, "
                f"difference {rec - base:+.1f} us ({rec / base:.3f}x)"
            )


if __name__ == "__main__":
    asyncio.run(main())
