"""The figures of bench/vs_postgraphile.py and the Markdown report made of them."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from workloads import Workload

BENCH = Path(__file__).resolve().parent
LABELS = {"reelgraph": "Reelgraph", "postgraphile": "PostGraphile v4", "raw": "raw asyncpg"}


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float | None  # server (or raw client) CPU time per request
    db_ms: float | None  # CPU time of the PostgreSQL backends serving it, per request
    rss_mb: float | None
    requests: int
    errors: int  # non-200, GraphQL errors, socket errors, timeouts
    other_cores: float  # machine CPU not spent by the server, its backends or wrk
    load: tuple[float, float]  # 1-min load average before, after
    sessions: int | None = None  # PostgreSQL sessions opened in the database during the run


@dataclass
class Result:
    runs: dict[str, list[Run]] = field(default_factory=dict)
    skipped: str | None = None
    equivalence: str = ""
    statements: int | None = None
    raw_error: str | None = None


@dataclass(frozen=True)
class Context:
    """Everything the report states besides the tables."""

    command: str
    database: str
    counts: dict[str, int]
    hot_stream: tuple[int, int]  # id, messages
    method: str
    started: dt.datetime
    finished: dt.datetime
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float]
    software: str
    commands: list[str]


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def summary(runs: list[Run]) -> dict[str, float | None]:
    rss = [r.rss_mb for r in runs if r.rss_mb is not None]
    return {
        "rps": median([r.rps for r in runs]),
        "p50": median([r.p50_ms for r in runs]),
        "p99": median([r.p99_ms for r in runs]),
        "cpu": median([r.cpu_ms for r in runs]),
        "db": median([r.db_ms for r in runs]),
        "rss": max(rss) if rss else None,
    }


def workload_table(workload: Workload, result: Result) -> list[str]:
    lines = [f"### {workload.title}", ""]
    if result.skipped:
        return [*lines, f"Skipped: {result.skipped}", ""]
    lines += [
        "| | req/s | p50 ms | p99 ms | CPU ms/req | DB CPU ms/req | RSS MB | req/s per round |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    sums = {}
    for key in ("reelgraph", "postgraphile", "raw"):
        runs = result.runs.get(key)
        if not runs:
            continue
        s = sums[key] = summary(runs)
        errors = sum(r.errors for r in runs)
        flag = f" ({errors:,} errors!)" if errors else ""
        lines.append(
            f"| {LABELS[key]}{flag} | {fmt(s['rps'], 0)} | {fmt(s['p50'])} | {fmt(s['p99'])} "
            f"| {fmt(s['cpu'])} | {fmt(s['db'])} | {fmt(s['rss'], 0)} "
            f"| {', '.join(f'{r.rps:,.0f}' for r in runs)} |"
        )
    for a, b in (("reelgraph", "postgraphile"), ("reelgraph", "raw")):
        if a in sums and b in sums:
            x, y = sums[a], sums[b]
            lines.append(
                f"| *{LABELS[a]} / {LABELS[b]}* | {ratio(x['rps'], y['rps'])} "
                f"| {ratio(x['p50'], y['p50'])} | {ratio(x['p99'], y['p99'])} "
                f"| {ratio(x['cpu'], y['cpu'])} | {ratio(x['db'], y['db'])} "
                f"| {ratio(x['rss'], y['rss'])} | |"
            )
    lines.append("")
    if result.equivalence:
        lines.append(f"- Same answer from both servers: {result.equivalence}.")
    if result.statements is not None:
        lines.append(
            f"- Raw floor: the {result.statements} SQL statements of one warm Reelgraph "
            "request, in order, on one dedicated connection per client."
        )
    if result.raw_error:
        lines.append(f"- Raw floor not measured: {result.raw_error}")
    sessions = {
        LABELS[k]: median([r.sessions for r in runs])
        for k, runs in result.runs.items()
        if k != "raw"
    }
    if any(v for v in sessions.values()):
        lines.append(
            "- PostgreSQL sessions opened during a run (median; the backends of sessions "
            "that ended within the run are missing from DB CPU): "
            + ", ".join(f"{k} {fmt(v, 0)}" for k, v in sessions.items())
            + "."
        )
    if workload.note:
        lines.append(f"- Note: {workload.note}.")
    other = [r.other_cores for runs in result.runs.values() for r in runs]
    loads = [x for runs in result.runs.values() for r in runs for x in r.load]
    if other:
        lines.append(
            f"- Other CPU use on the machine during these runs: {min(other):.2f} to "
            f"{max(other):.2f} cores busy outside the benchmark; 1-min load average "
            f"{min(loads):.2f} to {max(loads):.2f}."
        )
    return [*lines, ""]


def machine() -> str:
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"nproc {os.cpu_count()} ({model}), {mem_kb / 2**20:.1f} GiB RAM, {platform.platform()}"


def software(database_url: str, root: Path) -> str:
    def out(*cmd: str) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH, check=False)
        except OSError:
            return "?"
        return (done.stdout or done.stderr).strip()

    pg = out("psql", database_url, "-Atc", "SHOW server_version")
    postgraphile = json.loads((BENCH / "node_modules/postgraphile/package.json").read_text())
    wrk = " ".join(out("wrk", "--version").split()[:2])
    commit = out("git", "-C", str(root), "rev-parse", "--short", "HEAD")
    dirty = " + uncommitted changes" if out("git", "-C", str(root), "status", "--porcelain") else ""
    return (
        f"PostgreSQL {pg}; Python {platform.python_version()}, strawberry-graphql "
        f"{version('strawberry-graphql')}, uvicorn {version('uvicorn')}, SQLAlchemy "
        f"{version('sqlalchemy')}, asyncpg {version('asyncpg')}; Node {out('node', '--version')}, "
        f"postgraphile {postgraphile['version']}; {wrk}; Reelgraph at {commit}{dirty}"
    )


def dataset(counts: dict[str, int]) -> str:
    return (
        f"{counts['vods']:,} VODs, {counts['creators']:,} creators, "
        f"{counts['streams']:,} streams, {counts['messages']:,} chat messages"
    )


def render(ctx: Context, workloads: list[Workload], results: dict[str, Result]) -> str:
    lines = [
        "## Reelgraph vs PostGraphile v4 vs raw asyncpg",
        "",
        f"- Command: `{ctx.command}`",
        f"- Date: {ctx.started:%Y-%m-%d %H:%M %Z} to {ctx.finished:%H:%M} "
        f"({(ctx.finished - ctx.started).total_seconds() / 60:.1f} min)",
        f"- Machine: {machine()}",
        f"- Software: {ctx.software}",
        "- Load average (1/5/15 min): start "
        + " ".join(f"{x:.2f}" for x in ctx.load_start)
        + ", end "
        + " ".join(f"{x:.2f}" for x in ctx.load_end),
        f"- Dataset ({ctx.database}): {dataset(ctx.counts)} "
        f"({ctx.hot_stream[1]:,} in stream {ctx.hot_stream[0]})",
        f"- Method: {ctx.method}",
        "",
    ]
    for workload in workloads:
        lines += workload_table(workload, results[workload.key])
    w1c1 = results.get("W1c1")
    if w1c1 and w1c1.runs.get("reelgraph") and w1c1.runs.get("raw"):
        rg_p50 = summary(w1c1.runs["reelgraph"])["p50"]
        raw_p50 = summary(w1c1.runs["raw"])["p50"]
        if rg_p50 is not None and raw_p50:
            verdict = "met" if rg_p50 <= 3 * raw_p50 else "not met"
            lines += [
                f"**Target, W1 p50 at concurrency 1 <= 3x raw asyncpg: {verdict}.** Reelgraph "
                f"{rg_p50:.2f} ms = {rg_p50 / raw_p50:.1f}x the raw {raw_p50:.2f} ms.",
                "",
            ]
    return "\n".join([*lines, "### Commands", "", "```", *ctx.commands, "```", ""])
