"""CPU per request of the three workloads of vs_postgraphile.py, in process, with the
execution plans of schema/plan.py on and off.

Run (after `python bench/vs_postgraphile.py` has built the rg_bench dataset):
    taskset -c 1 python bench/inprocess.py [--requests 1000] [--rounds 4]

Drives the whole ASGI app in this process (httpx ASGITransport, no sockets), one request
at a time, and divides this process's CPU time by the requests: the client's share is in
the figure too, the same in both variants. The variants are two apps on one database,
alternated round by round (ABBA). Both answers are compared first, byte for byte, and
the comparison is printed with the figures. Prints figures and the ratio; never passes
or fails (a request that errors stops the run: there would be nothing to time).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from contextlib import AsyncExitStack

import httpx
import report
import vs_postgraphile as harness  # bench/ is on the path when run as a script
from workloads import build

import app as reelgraph
from settings import Settings

VARIANTS = ("plans off", "plans on")


async def timed(
    http: httpx.AsyncClient, body: dict[str, str], headers: dict[str, str], n: int
) -> float:
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
    url = harness.database_url()
    counts = await harness.prepare_dataset(url)
    fixture = await harness.find_fixture(url)
    tokens = await harness.make_tokens(url, fixture)
    wanted = {k.strip() for k in args.workloads.split(",")}
    workloads = [
        w
        for w in build(fixture, connections=1)
        if w.key in wanted and (w.key != "W2" or fixture.rg_chat_cursor)  # as the harness
    ]
    print(f"dataset: {report.dataset(counts)}")
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
            body = {"query": w.reelgraph}
            headers = {"authorization": f"Bearer {tokens[w.role]}"}
            answers = set()
            for variant in VARIANTS:
                response = await clients[variant].post("/graphql", json=body, headers=headers)
                answers.add(response.content)
                if response.status_code != 200 or b'"errors"' in response.content:
                    raise SystemExit(f"{w.key} ({variant}): {response.text[:300]}")
                await timed(clients[variant], body, headers, args.requests // 4)  # warm-up
            figures: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for i in range(2 * args.rounds):
                variant = VARIANTS[(i + i // 2) % 2]
                figures[variant].append(await timed(clients[variant], body, headers, args.requests))
            off, on = (statistics.median(figures[v]) for v in VARIANTS)
            print(
                f"{w.key}: plans off {off:.3f}, plans on {on:.3f} ms/request "
                f"({on / off:.2f}x); same answer: {'yes' if len(answers) == 1 else 'NO'}"
            )


if __name__ == "__main__":
    asyncio.run(main())
