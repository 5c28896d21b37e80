"""Reelgraph vs PostGraphile v4 vs the raw SQL floor, over HTTP with wrk (issue 7).

Usage (from the repository root, venv active):

    python bench/vs_postgraphile.py [--rounds 3] [--duration 15] [--markdown FILE]

One command does everything; bench/README.md explains the method. In order:

1. `reelgraph migrate` on the benchmark database (DATABASE_URL, default rg_bench on
   127.0.0.1), then the dataset: reused when its counts are there, built with
   `reelgraph seed` when the database is empty, refused when it is partial.
2. Fixtures: a creator who owns about 1,000 VODs (one of whose streams was recorded, so
   `stream` is not always null), the chattiest stream, a position 500,000 messages deep,
   a creator token and an admin token (`reelgraph create-user`, which reuses the user).
3. Both servers, each pinned to CPU 1 (wrk on CPU 0; PostgreSQL is not pinned):
   `reelgraph serve` and PostGraphile v4 from bench/node_modules (`npm ci` if missing).
4. Per workload: one request to each server, checked to return the same rows; then
   rounds of wrk runs, the servers alternated, warmup before each, and the raw floor:
   the SQL Reelgraph issued for that request, replayed over asyncpg (bench/raw_floor.py).
5. A Markdown report: per workload req/s, p50, p99, server CPU ms per request (from the
   server processes' /proc accounting), PostgreSQL backend CPU ms per request, RSS, and
   the ratios; the machine, the load, and the exact commands.

Prints figures and ratios; never pass/fail. Targets only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import procstat
import raw_floor
import report
from report import LABELS, Result, Run, fmt
from workloads import Fixture, Workload, build

from db.seed import SEEDED_TABLES

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/rg_bench"
SEED = "--users 1000 --vods 1000000 --streams 100 --messages 1000000 --hot-stream-share 1.0"
MIN_COUNTS = {"vods": 1_000_000, "creators": 1_000, "streams": 100, "hot_messages": 1_000_000}
CHAT_DEPTH = 500_000
# One token carries the whole load; the per-token budget (50,000 cost points a minute)
# would answer RATE_LIMITED within a second. The limiter still runs on every request.
RATE_LIMIT_BUDGET = str(10**9)
WRK_CPU, SERVER_CPU = "0", "1"
# wrk's failure counters (bench/graphql_post.lua): what a run's "errors" adds up.
ERROR_KEYS = (
    "non_200",
    "graphql_errors",
    "connect_errors",
    "read_errors",
    "write_errors",
    "timeouts",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Database: migrate, dataset, fixtures, tokens
# ---------------------------------------------------------------------------------------


def reelgraph_cli(url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        ["reelgraph", *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"reelgraph {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


async def ensure_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
        try:
            log(f"creating database {name}")
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
    else:
        await conn.close()


async def dataset_counts(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM videos) AS vods,
               (SELECT count(*) FROM users WHERE role = 'creator') AS creators,
               (SELECT count(*) FROM live_streams) AS streams,
               (SELECT count(*) FROM chat_messages) AS messages,
               (SELECT count(*) FROM (SELECT stream_id FROM chat_messages
                 WHERE stream_id = (SELECT id FROM live_streams WHERE status = 'live'
                                    ORDER BY id LIMIT 1)) m) AS hot_messages
        """
    )
    return dict(row)


async def prepare_dataset(url: str) -> dict[str, int]:
    await ensure_database(url)
    log("reelgraph migrate")
    reelgraph_cli(url, "migrate")
    conn = await asyncpg.connect(url)
    try:
        counts = await dataset_counts(conn)
        if all(counts[k] >= v for k, v in MIN_COUNTS.items()):
            log(f"reusing the dataset: {counts}")
            # As `reelgraph seed` ends, and as autovacuum would (it may be off): a dataset
            # seeded before the seed vacuumed gets its visibility map; fast when it has one.
            log(f"VACUUM (ANALYZE) {SEEDED_TABLES}")
            await conn.execute(f"VACUUM (ANALYZE) {SEEDED_TABLES}")
            return counts
        if counts["vods"] or counts["streams"] or counts["messages"]:
            raise SystemExit(
                f"{url} holds a partial dataset {counts}; expected at least {MIN_COUNTS}. "
                "Point DATABASE_URL at an empty database (it will be seeded) or at a full one."
            )
        log(f"seeding (about 2 minutes): reelgraph seed {SEED}")
        reelgraph_cli(url, "seed", *SEED.split())
        counts = await dataset_counts(conn)
        log(f"seeded: {counts}")
        return counts
    finally:
        await conn.close()


async def find_fixture(url: str) -> Fixture:
    conn = await asyncpg.connect(url)
    try:
        creator = await conn.fetchrow(
            """
            WITH c AS (SELECT owner_id, count(*) AS n FROM videos
                       WHERE deleted_at IS NULL GROUP BY owner_id)
            SELECT c.owner_id, u.username, c.n
            FROM c JOIN users u ON u.id = c.owner_id
            WHERE u.role = 'creator'
            ORDER BY EXISTS (SELECT 1 FROM live_streams s
                             WHERE s.owner_id = c.owner_id AND s.vod_video_id IS NOT NULL) DESC,
                     abs(c.n - 1000), c.owner_id
            LIMIT 1
            """
        )
        # Reelgraph shows a creator their VODs plus those recorded from their streams; the
        # PostGraphile query says `ownerId: X`. Equal only if the second set adds nothing.
        foreign = await conn.fetchval(
            """SELECT count(*) FROM live_streams s JOIN videos v ON v.id = s.vod_video_id
               WHERE s.owner_id = $1 AND v.owner_id <> $1 AND v.deleted_at IS NULL""",
            creator["owner_id"],
        )
        if foreign:
            log(f"warning: creator {creator['username']} sees {foreign} VODs of others")
        hot = await conn.fetchrow(
            """SELECT stream_id, count(*) AS n FROM chat_messages WHERE deleted_at IS NULL
               GROUP BY stream_id ORDER BY n DESC, stream_id LIMIT 1"""
        )
        deep_id = await conn.fetchval(
            """SELECT id FROM chat_messages WHERE stream_id = $1 AND deleted_at IS NULL
               ORDER BY id DESC OFFSET $2 LIMIT 1""",
            hot["stream_id"],
            CHAT_DEPTH - 1,
        )
        secret = await conn.fetchval("SELECT value FROM server_secrets WHERE name = 'cursor'")
    finally:
        await conn.close()
    rg_cursor = None
    try:  # Reelgraph's cursor for that position, signed with the server's own key.
        from resolvers.pagination import CursorCodec

        rg_cursor = CursorCodec(bytes(secret)).encode(f"chat:{hot['stream_id']}", [deep_id])
    except Exception as exc:  # the chat code is being written; W2 is skipped without it
        log(f"no Reelgraph chat cursor ({type(exc).__name__}: {exc}); W2 will be skipped")
    return Fixture(
        creator_id=creator["owner_id"],
        creator_username=creator["username"],
        creator_vods=creator["n"],
        hot_stream_id=hot["stream_id"],
        hot_stream_messages=hot["n"],
        chat_depth=CHAT_DEPTH,
        rg_chat_cursor=rg_cursor,
        pg_chat_cursor=None,  # asked from PostGraphile once it is up (offset query)
    )


def make_token(url: str, username: str, role: str) -> str:
    return reelgraph_cli(url, "create-user", username, "--role", role).strip().splitlines()[-1]


async def make_tokens(url: str, fixture: Fixture) -> dict[str, str]:
    """A token per workload role: the fixture's creator, and an admin."""
    return {
        "creator": make_token(url, fixture.creator_username, "creator"),
        "admin": make_token(url, await admin_username(url), "admin"),
    }


async def admin_username(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        name = await conn.fetchval(
            "SELECT username FROM users WHERE role = 'admin' ORDER BY id LIMIT 1"
        )
    finally:
        await conn.close()
    return name or "admin"


# ---------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------


@dataclass
class Server:
    key: str
    name: str
    port: int
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    def start(self) -> None:
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, ended by id below
            )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def shown(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"{env} {shlex.join(self.command)}".strip()


def post(url: str, query: str, token: str | None, timeout: float = 120) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps({"query": query}).encode(),
        headers={"content-type": "application/json", "accept": "application/json"}
        | ({"authorization": f"Bearer {token}"} if token else {}),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return json.loads(body)  # type: ignore[no-any-return]
        except ValueError:
            return {"errors": [{"message": f"HTTP {exc.code}: {body[:200]!r}"}]}


def check_alive(server: Server) -> None:
    """Stop the benchmark, showing the end of its log, if the server has exited."""
    assert server.process is not None
    if server.process.poll() is not None:
        raise SystemExit(
            f"{server.name} exited ({server.process.returncode}); log {server.log_path}:\n"
            + server.log_path.read_text()[-2000:]
        )


def wait_ready(server: Server, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive(server)
        with contextlib.suppress(OSError, ValueError):
            if post(server.url, "{ __typename }", None, timeout=2).get("data"):
                return
        time.sleep(0.3)
    raise SystemExit(f"{server.name} not ready after {timeout} s; log {server.log_path}")


def servers(args: argparse.Namespace, url: str, workdir: Path) -> list[Server]:
    pin = ["taskset", "-c", SERVER_CPU] if args.pin else []
    reelgraph = Server(
        key="reelgraph",
        name="Reelgraph",
        port=args.reelgraph_port,
        command=[
            *pin,
            "reelgraph",
            "serve",
            "--port",
            str(args.reelgraph_port),
            "--workers",
            str(args.workers),
        ],
        env={"DATABASE_URL": url, "REELGRAPH_RATE_LIMIT_BUDGET": RATE_LIMIT_BUDGET},
        log_path=workdir / "reelgraph.log",
    )
    cluster = ["--cluster-workers", str(args.workers)] if args.workers > 1 else []
    postgraphile = Server(
        key="postgraphile",
        name="PostGraphile",
        port=args.postgraphile_port,
        command=[
            *pin,
            "node",
            "bench/node_modules/postgraphile/cli.js",
            "--connection",
            url,
            "--schema",
            "public",
            "--host",
            "127.0.0.1",
            "--port",
            str(args.postgraphile_port),
            "--disable-graphiql",
            "--disable-query-log",
            # Read-only comparison. Also required: chat_messages.client_mutation_id collides
            # with the clientMutationId of PostGraphile's generated mutation inputs.
            "--disable-default-mutations",
            # The same connection ceiling as Reelgraph (pool_size 20 + max_overflow 0).
            "--max-pool-size",
            "20",
            *cluster,
        ],
        env={"NODE_ENV": "production"},
        log_path=workdir / "postgraphile.log",
    )
    return [reelgraph, postgraphile]


def ensure_postgraphile_installed() -> None:
    if (BENCH / "node_modules" / "postgraphile" / "cli.js").exists():
        return
    log("npm ci (bench/package-lock.json)")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True)


def with_pg_chat_cursor(fixture: Fixture, pg: Server) -> Fixture:
    """The fixture with PostGraphile's own cursor for the deep chat position (pg is up)."""
    deep = post(
        pg.url,
        f"{{ allChatMessages(first: 1, offset: {fixture.chat_depth - 1}, condition: "
        f'{{streamId: "{fixture.hot_stream_id}", deletedAt: null}}, orderBy: ID_DESC) '
        f"{{ edges {{ cursor }} }} }}",
        None,
    )
    cursor = deep["data"]["allChatMessages"]["edges"][0]["cursor"]
    return dataclasses.replace(fixture, pg_chat_cursor=cursor)


def schema_fields(server: Server) -> set[str]:
    answer = post(
        server.url,
        "{ __schema { types { name fields(includeDeprecated: true) { name } } } }",
        None,
    )
    return {
        f"{t['name']}.{f['name']}"
        for t in answer["data"]["__schema"]["types"]
        for f in (t["fields"] or [])
    }


# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(FileNotFoundError, PermissionError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def db_client_ports(tree: list[int], db_port: int) -> set[int]:
    """Local ports of the tree's TCP connections to PostgreSQL (its pool)."""
    inodes = set().union(*(socket_inodes(p) for p in tree))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                local, remote, inode = cols[1], cols[2], cols[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == db_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


class Backends:
    """PostgreSQL backend processes serving one server's pool, found by client port."""

    def __init__(self, conn: asyncpg.Connection, db_port: int) -> None:
        self.conn = conn
        self.db_port = db_port

    async def sample(self, tree: list[int]) -> dict[int, float]:
        ports = db_client_ports(tree, self.db_port)
        pids = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", list(ports)
        )
        return procstat.sample_pids([r["pid"] for r in pids])

    async def sessions(self) -> int:
        """Sessions ever opened in this database (PostgreSQL 14+), to see pool churn."""
        value = await self.conn.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(value or 0)


def wrk_command(
    server: Server, args: argparse.Namespace, connections: int, seconds: float
) -> list[str]:
    pin = ["taskset", "-c", WRK_CPU] if args.pin else []
    return [
        *pin,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{int(seconds)}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "graphql_post.lua"),
        server.url,
    ]


def run_wrk(command: list[str], body: Path, token: str) -> dict[str, Any]:
    env = {**os.environ, "WRK_BODY": str(body), "WRK_TOKEN": token}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"^WRKJSON (.*)$", done.stdout, re.M)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def measured_run(
    server: Server,
    workload: Workload,
    body: Path,
    token: str,
    args: argparse.Namespace,
    backends: Backends,
) -> Run:
    assert server.process is not None
    root = server.process.pid
    tree0 = procstat.sample_tree(root)
    db0 = await backends.sample(list(tree0.cpu))
    sessions0 = await backends.sessions()
    busy0, _ = procstat.machine_busy_seconds()
    wrk0, load0, t0 = children_cpu(), os.getloadavg()[0], time.monotonic()
    out = await asyncio.to_thread(
        run_wrk, wrk_command(server, args, workload.connections, args.duration), body, token
    )
    elapsed = time.monotonic() - t0
    tree1 = procstat.sample_tree(root)
    db1 = await backends.sample(list(tree1.cpu))
    sessions1 = await backends.sessions()
    busy1, _ = procstat.machine_busy_seconds()
    wrk_cpu, load1 = children_cpu() - wrk0, os.getloadavg()[0]
    server_cpu = procstat.cpu_delta(tree0.cpu, tree1.cpu)
    db_cpu = procstat.cpu_delta(db0, db1)
    n = out["requests"]
    errors = sum(out[k] for k in ERROR_KEYS)
    return Run(
        rps=n / (out["duration_us"] / 1e6),
        p50_ms=out["p50_us"] / 1000,
        p99_ms=out["p99_us"] / 1000,
        cpu_ms=server_cpu * 1000 / n if n else None,
        db_ms=db_cpu * 1000 / n if n else None,
        rss_mb=tree1.rss / 2**20,
        requests=n,
        errors=errors,
        other_cores=max(0.0, (busy1 - busy0) - server_cpu - db_cpu - wrk_cpu) / elapsed,
        load=(load0, load1),
        sessions=sessions1 - sessions0,
    )


def raw_run(
    url: str, spec: Path, connections: int, args: argparse.Namespace
) -> tuple[Run, list[str]]:
    pin = ["taskset", "-c", SERVER_CPU] if args.pin else []
    command = [
        *pin,
        sys.executable,
        str(BENCH / "raw_floor.py"),
        str(spec),
        "--database-url",
        url,
        "--connections",
        str(connections),
        "--warmup",
        str(args.raw_warmup),
        "--duration",
        str(args.duration),
    ]
    busy0, load0, t0 = procstat.machine_busy_seconds()[0], os.getloadavg()[0], time.monotonic()
    done = subprocess.run(command, cwd=BENCH, capture_output=True, text=True, check=False)
    found = re.search(r"^RAWJSON (.*)$", done.stdout, re.M)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"raw floor failed: {done.stderr[-1500:]}")
    out = json.loads(found.group(1))
    elapsed = time.monotonic() - t0
    n = out["requests"]
    busy = procstat.machine_busy_seconds()[0] - busy0
    # The client's and backends' CPU over the measured window vs the machine over the whole
    # subprocess (warmup included): the "other" figure is approximate here.
    other = max(0.0, busy / elapsed - (out["client_cpu_s"] + out["db_cpu_s"]) / args.duration)
    run = Run(
        rps=out["rps"],
        p50_ms=out["p50_ms"],
        p99_ms=out["p99_ms"],
        cpu_ms=out["client_cpu_s"] * 1000 / n if n else None,
        db_ms=out["db_cpu_s"] * 1000 / n if n else None,
        rss_mb=None,
        requests=n,
        errors=0,
        other_cores=other,
        load=(load0, os.getloadavg()[0]),
    )
    return run, command


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def check_local(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"refusing to benchmark against {host}: only 127.0.0.1")


def wait_for_idle(seconds: float, threshold: float) -> None:
    deadline = time.monotonic() + seconds
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        log(f"load average {os.getloadavg()[0]:.2f} >= {threshold}; waiting")
        time.sleep(min(15.0, max(0.0, deadline - time.monotonic())))


def ensure_port_free(port: int) -> None:
    """Refuse a port something else listens on: wrk would load that server instead."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As uvicorn and Node bind: a listener refuses this, old TIME_WAIT sockets don't.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SystemExit(
                f"port {port} is in use ({exc.strerror}); another benchmark may be running. "
                "Pick another with --reelgraph-port / --postgraphile-port."
            ) from None


def add_server_options(
    parser: argparse.ArgumentParser, pinned: str, ports: tuple[int, int]
) -> None:
    """--no-pin and the two ports, read by servers() and wrk_command()."""
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help=f"don't pin {pinned} to CPU {SERVER_CPU} and wrk to CPU {WRK_CPU}",
    )
    parser.add_argument("--reelgraph-port", type=int, default=ports[0])
    parser.add_argument("--postgraphile-port", type=int, default=ports[1])


def database_url() -> str:
    """DATABASE_URL (default: rg_bench on 127.0.0.1), refused unless local."""
    url = os.environ.get("DATABASE_URL") or DEFAULT_URL
    check_local(url)
    return url


def parse_args(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, str]:
    """The arguments (no pinning on a single CPU) and DATABASE_URL, refused unless local."""
    args = parser.parse_args()
    url = database_url()
    if args.pin and (os.cpu_count() or 1) < 2:
        args.pin = False
    return args, url


@contextlib.contextmanager
def running(all_servers: list[Server]) -> Iterator[None]:
    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    for s in all_servers:
        ensure_port_free(s.port)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for s in all_servers:
            s.start()
        for s in all_servers:
            wait_ready(s)
        yield
    finally:
        for s in all_servers:
            s.stop()
        signal.signal(signal.SIGTERM, previous)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description="Reelgraph vs PostGraphile v4 vs raw asyncpg over HTTP (wrk)."
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per server per workload")
    parser.add_argument("--duration", type=float, default=15, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=10, help="seconds before round 1")
    parser.add_argument("--rewarm", type=float, default=3, help="seconds before later rounds")
    parser.add_argument("--raw-warmup", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workloads", default="W1,W1c1,W2,W3")
    parser.add_argument("--workers", type=int, default=1, help="processes per server")
    add_server_options(parser, "servers", ports=(18430, 18431))
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to this long for the 1-min load average to fall below "
        "--idle-load (other work on the machine skews every figure)",
    )
    parser.add_argument("--idle-load", type=float, default=0.5)
    args, url = parse_args(parser)
    wait_for_idle(args.wait_idle, args.idle_load)
    started = dt.datetime.now().astimezone()
    load_start = os.getloadavg()
    log(f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")

    ensure_postgraphile_installed()
    counts = await prepare_dataset(url)  # creates the database if need be
    # Read before the servers start: the code they load is the code of this revision,
    # whatever the working tree becomes while they run.
    software = report.software(url, ROOT)
    fixture = await find_fixture(url)
    log(
        f"creator {fixture.creator_username} (id {fixture.creator_id}, "
        f"{fixture.creator_vods} VODs); hot stream {fixture.hot_stream_id} "
        f"({fixture.hot_stream_messages:,} messages)"
    )
    tokens = await make_tokens(url, fixture)
    selected = {k.strip() for k in args.workloads.split(",")}
    workdir = Path(tempfile.mkdtemp(prefix="rg-vs-pg-"))
    rg, pg = all_servers = servers(args, url, workdir)
    results: dict[str, Result] = {}
    commands: list[str] = []

    with running(all_servers):
        log(f"servers up; logs in {workdir}")
        fixture = with_pg_chat_cursor(fixture, pg)
        rg_fields = schema_fields(rg)
        workloads = [w for w in build(fixture, connections=args.connections) if w.key in selected]
        db_conn = await asyncpg.connect(url)
        backends = Backends(db_conn, urlsplit(url).port or 5432)
        try:
            for workload in workloads:
                results[workload.key] = await bench_workload(
                    workload,
                    fixture,
                    rg,
                    pg,
                    rg_fields,
                    tokens,
                    url,
                    args,
                    workdir,
                    backends,
                    commands,
                )
        finally:
            await db_conn.close()

    finished = dt.datetime.now().astimezone()
    pin = (
        f"servers and the raw-floor client pinned to CPU {SERVER_CPU} and wrk to CPU "
        f"{WRK_CPU} (taskset); PostgreSQL not pinned"
        if args.pin
        else "nothing pinned"
    )
    context = report.Context(
        command=shlex.join(["python", "bench/vs_postgraphile.py", *sys.argv[1:]]),
        database=urlsplit(url).path.lstrip("/"),
        counts=counts,
        hot_stream=(fixture.hot_stream_id, fixture.hot_stream_messages),
        method=(
            f"{args.rounds} rounds per server per workload, the servers alternated "
            f"(Reelgraph first in odd rounds); {args.warmup:g} s warmup before round 1 and "
            f"{args.rewarm:g} s before later rounds, then {args.duration:g} s measured; "
            f"wrk with 1 thread over keep-alive connections; {pin}; {args.workers} "
            "process(es) per server. Raw floor: one run, "
            f"{args.raw_warmup:g} s warmup + {args.duration:g} s. Figures are medians over "
            "the rounds (RSS: the largest, after a run). CPU ms/req: CPU time "
            "(utime+stime, /proc) of the server's process tree over the run / requests "
            "served; for the raw floor, of the client. DB CPU ms/req: the same for the "
            "PostgreSQL backends of that server's connections. Ratios are Reelgraph / "
            "other: above 1x means more req/s, more ms, more MB."
        ),
        started=started,
        finished=finished,
        load_start=load_start,
        load_end=os.getloadavg(),
        software=software,
        commands=[f"{s.name}: {s.shown()}" for s in all_servers] + commands,
    )
    text = report.render(context, workloads, results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
        log(f"report written to {args.markdown}")


async def bench_workload(
    workload: Workload,
    fixture: Fixture,
    rg: Server,
    pg: Server,
    rg_fields: set[str],
    tokens: dict[str, str],
    url: str,
    args: argparse.Namespace,
    workdir: Path,
    backends: Backends,
    commands: list[str],
) -> Result:
    result = Result()
    token = tokens[workload.role]
    missing = [f for f in workload.reelgraph_needs if f not in rg_fields]
    if missing:
        result.skipped = f"Reelgraph's schema has no {', '.join(missing)} yet (being built)."
    elif workload.key == "W2" and fixture.rg_chat_cursor is None:
        result.skipped = "no Reelgraph chat cursor could be made (chat code not importable)."
    if result.skipped:
        log(f"{workload.key}: skipped: {result.skipped}")
        return result
    queries = [(rg, workload.reelgraph), (pg, workload.postgraphile)]
    answers = {s.key: post(s.url, q, token) for s, q in queries}
    for key, answer in answers.items():
        if answer.get("errors") or not answer.get("data"):
            result.skipped = f"{LABELS[key]} answered errors: {json.dumps(answer)[:300]}"
            log(f"{workload.key}: skipped: {result.skipped}")
            return result
    same_rg = workload.normalise_reelgraph(answers["reelgraph"]["data"])
    same_pg = workload.normalise_postgraphile(answers["postgraphile"]["data"])
    rows = same_rg[2] if workload.key.startswith("W1") else same_rg
    if same_rg == same_pg:
        result.equivalence = f"yes ({len(rows)} rows" + (
            f", totalCount {same_rg[0]:,}, hasNextPage {str(same_rg[1]).lower()})"
            if workload.key.startswith("W1")
            else ")"
        )
    else:
        result.equivalence = "NO: the answers differ (see the harness log)"
        log(f"{workload.key}: answers differ:\n  reelgraph    {same_rg}\n  postgraphile {same_pg}")
    bodies = {}
    for s, q in queries:
        bodies[s.key] = workdir / f"{workload.key}-{s.key}.json"
        bodies[s.key].write_text(json.dumps({"query": q}))

    for round_no in range(args.rounds):
        order = (rg, pg) if round_no % 2 == 0 else (pg, rg)
        for server in order:
            warm = args.warmup if round_no == 0 else args.rewarm
            if warm > 0:
                await asyncio.to_thread(
                    run_wrk,
                    wrk_command(server, args, workload.connections, warm),
                    bodies[server.key],
                    token,
                )
            run = await measured_run(server, workload, bodies[server.key], token, args, backends)
            result.runs.setdefault(server.key, []).append(run)
            log(
                f"{workload.key} round {round_no + 1} {server.name:12} {run.rps:8,.0f} req/s  "
                f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  "
                f"cpu {fmt(run.cpu_ms)} ms/req  db {fmt(run.db_ms)} ms/req  "
                f"errors {run.errors}  other {run.other_cores:.2f} cores"
            )
        if round_no == 0:
            commands.append(
                f"{workload.key}: WRK_BODY=<body> WRK_TOKEN=<{workload.role} token> "
                + shlex.join(wrk_command(rg, args, workload.connections, args.duration))
                + "  (same against :"
                + str(pg.port)
                + ")"
            )

    spec = workdir / f"{workload.key}-statements.pickle"
    try:
        statements = await raw_floor.capture(url, bodies["reelgraph"].read_bytes(), token)
        raw_floor.save(statements, spec)
        result.statements = len(statements)
        (workdir / f"{workload.key}-statements.sql").write_text(
            "\n\n".join(f"-- params: {p!r}\n{s};" for s, p in statements)
        )
        run, command = await asyncio.to_thread(raw_run, url, spec, workload.connections, args)
        result.runs["raw"] = [run]
        commands.append(f"{workload.key} raw floor: " + shlex.join(command))
        log(
            f"{workload.key} raw floor    {run.rps:8,.0f} req/s  p50 {run.p50_ms:7.2f} ms  "
            f"p99 {run.p99_ms:7.2f} ms  ({len(statements)} statements)"
        )
    except Exception as exc:
        result.raw_error = f"{type(exc).__name__}: {exc}"[:300]
        log(f"{workload.key}: raw floor failed: {result.raw_error}")
    return result


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
