"""The raw floor: the SQL statements Reelgraph issues for a request, over bare asyncpg.

Two halves:

- `capture(...)`, used by bench/vs_postgraphile.py: runs Reelgraph in-process (its own
  `create_app`, the lifespan, one HTTP request through httpx's ASGI transport) and
  records every statement and its parameters as the driver receives them
  (`before_cursor_execute`). The request is sent three times and the third is kept, so
  the token's `last_used_at` touch (a write at most once a minute) and the first-use
  work are not part of it. The connection checkout ping (`SELECT 1`) is not a cursor
  statement and is not captured: it is overhead of the server, not of its data access.
- `python bench/raw_floor.py SPEC --connections N --warmup S --duration S`: replays a
  captured request over N dedicated asyncpg connections (no pool, no HTTP, no GraphQL),
  each connection running the request's statements one after another in a closed loop,
  and prints one JSON line: req/s, p50, p99, the client's CPU time and the CPU time of
  its PostgreSQL backends over the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import resource
import statistics
import time
from pathlib import Path
from typing import Any

from procstat import cpu_seconds

Statement = tuple[str, tuple[Any, ...]]


async def capture(
    database_url: str, body: bytes, token: str | None, *, repeat: int = 3
) -> list[Statement]:
    """The statements of one warm Reelgraph request for `body`, in the order issued."""
    import httpx
    from sqlalchemy import event

    from app import create_app
    from settings import Settings

    settings = Settings.from_env(
        {"DATABASE_URL": database_url, "REELGRAPH_RATE_LIMIT_BUDGET": str(10**9)}
    )
    app = create_app(settings)
    log: list[Statement] = []
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    async with app.router.lifespan_context(app):
        engine = app.state.services.db.engine

        def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            log.append((statement, tuple(parameters or ())))

        event.listen(engine.sync_engine, "before_cursor_execute", before)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for _ in range(repeat):
                log.clear()
                response = await client.post("/graphql", content=body, headers=headers)
                answer = response.json()
                if response.status_code != 200 or answer.get("errors"):
                    raise RuntimeError(f"capture request failed: {response.text[:300]}")
        event.remove(engine.sync_engine, "before_cursor_execute", before)
    writes = [s for s, _ in log if not s.lstrip().upper().startswith(("SELECT", "WITH"))]
    if writes:
        raise RuntimeError(f"captured request is not read-only: {writes[0][:120]}")
    return list(log)


def save(statements: list[Statement], path: Path) -> None:
    path.write_bytes(pickle.dumps(statements))


async def replay(
    database_url: str,
    statements: list[Statement],
    *,
    connections: int,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    import asyncpg

    conns = [await asyncpg.connect(database_url) for _ in range(connections)]
    backends = [c.get_server_pid() for c in conns]
    latencies: list[float] = []
    started = time.perf_counter()
    window = (started + warmup, started + warmup + duration)

    async def worker(conn: Any) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= window[1]:
                return
            for sql, params in statements:
                await conn.fetch(sql, *params)
            t1 = time.perf_counter()
            if t0 >= window[0] and t1 <= window[1]:
                latencies.append(t1 - t0)

    async def sample_at(moment: float) -> tuple[float, float]:
        await asyncio.sleep(max(0.0, moment - time.perf_counter()))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime, sum(cpu_seconds(p) for p in backends)

    tasks = [asyncio.create_task(worker(c)) for c in conns]
    (client0, db0), (client1, db1) = await asyncio.gather(
        sample_at(window[0]), sample_at(window[1])
    )
    await asyncio.gather(*tasks)
    for c in conns:
        await c.close()
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "duration_s": duration,
        "rps": n / duration,
        "p50_ms": statistics.median(latencies) * 1000 if n else None,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else None,
        "client_cpu_s": client1 - client0,
        "db_cpu_s": db1 - db0,
        "statements": len(statements),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="pickled statements from capture()")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=15.0)
    args = parser.parse_args()
    statements = pickle.loads(args.spec.read_bytes())
    try:
        import uvloop  # the event loop uvicorn runs Reelgraph on

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    result = run(
        replay(
            args.database_url,
            statements,
            connections=args.connections,
            warmup=args.warmup,
            duration=args.duration,
        )
    )
    print("RAWJSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
