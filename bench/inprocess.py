"""CPU per request of the three workloads of vs_postgraphile.py, in process, with the
execution plans of schema/plan.py on and off.

Run (after `python bench/vs_postgraphile.py` has built the rg_bench dataset):
    taskset -c 1 python bench/inprocess.py [--requests 1000] [--rounds 4]

Drives the whole ASGI app in this process (httpx ASGITransport, no sockets), one request
at a time, and divides this process's CPU time by the requests: the client's share is in
the figure too, the same in both variants. The variants are two apps on one database,
alternated round by round (ABBA). Both answers are compared first: they must be equal
byte for byte. Prints figures and the ratio; never passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from contextlib import AsyncExitStack

import httpx
import vs_postgraphile as harness  # bench/ is on the path when run as a script
from workloads import build

import app as reelgraph
from settings import Settings

VARIANTS = ("plans off", "plans on")


async def timed(http: httpx.AsyncClient, body: dict[str, str], token: str, n: int) -> float:
    headers = {"authorization": f"Bearer {token}"}
    started = time.process_time()
    for _ in range(n):
        await http.post("/graphql", json=body, headers=headers)
    return (time.process_time() - started) / n * 1e3


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per round")
    parser.add_argument("--rounds", type=int, default=4, help="per variant, alternated")
    parser.add_argument("--workloads", default="W1,W2,W3")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", harness.DEFAULT_URL)
    counts = await harness.prepare_dataset(url)
    fixture = await harness.find_fixture(url)
    tokens = await harness.make_tokens(url, fixture)
    wanted = args.workloads.split(",")
    workloads = [w for w in build(fixture, connections=1) if w.key in wanted]
    print(f"dataset: {', '.join(f'{v:,} {k}' for k, v in counts.items())}")
    print(f"{args.requests} requests x {args.rounds} rounds per variant; CPU ms/request")
    async with AsyncExitStack() as stack:
        clients = {}
        for variant in VARIANTS:
            settings = Settings(
                database_url=url,
                rate_limit_budget=10**9,
                execution_plans=variant == "plans on",
            )
            app = reelgraph.create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            clients[variant] = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://bench")
            )
        for w in workloads:
            body, token = {"query": w.reelgraph}, tokens[w.role]
            answers = set()
            for variant in VARIANTS:
                headers = {"authorization": f"Bearer {token}"}
                response = await clients[variant].post("/graphql", json=body, headers=headers)
                answers.add(response.content)
                assert response.status_code == 200 and b'"errors"' not in response.content
                await timed(clients[variant], body, token, args.requests // 4)  # warm-up
            figures: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for i in range(2 * args.rounds):
                variant = VARIANTS[(i + i // 2) % 2]
                figures[variant].append(await timed(clients[variant], body, token, args.requests))
            off, on = (statistics.median(figures[v]) for v in VARIANTS)
            print(
                f"{w.key}: plans off {off:.3f}, plans on {on:.3f} ms/request "
                f"({on / off:.2f}x); same answer: {'yes' if len(answers) == 1 else 'NO'}"
            )


if __name__ == "__main__":
    asyncio.run(main())
