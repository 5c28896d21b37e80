"""Memory soak: the server's RSS over a long wrk run (issue 7: "server memory per worker
stays flat over a 5-minute run; report RSS").

Usage (from the repository root, venv active):

    python bench/soak.py [--minutes 5] [--workload W1] [--connections 16]
                         [--with-postgraphile] [--markdown FILE]

Same database, dataset, fixtures, tokens, server command lines, CPU pinning and wrk script
as bench/vs_postgraphile.py (imported from it, not copied). The server is started fresh,
warmed up (10 s of the same load), then loaded with wrk for --minutes, in back-to-back
slices of --interval seconds; after each slice the resident memory (VmRSS, /proc) of the
server's process tree is read. Prints one row per sample, then the RSS after 1 minute
and at the end, the least-squares slope over the last 4 minutes, and the request rate,
each with the dataset it was measured on. Prints figures; never passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import procstat
import report
import vs_postgraphile as harness
from workloads import Fixture, Workload, build

SLOPE_WINDOW_S = 240  # the slope is fitted over the last 4 minutes
EARLY_S = 60  # "RSS at 1 min"


def out(lines: list[str], line: str = "") -> None:
    """Print a report line now (a soak is long) and keep it for --markdown."""
    print(line, flush=True)
    lines.append(line)


@dataclass(frozen=True, slots=True)
class Sample:
    elapsed: float  # seconds since the measured load began
    rss: int  # bytes, whole process tree
    largest: int  # bytes, the largest single process (a worker, with --workers N)
    processes: int
    requests: int  # served so far (measured load only, warmup excluded)
    slice_rps: float  # over the slice that ended at this sample
    errors: int  # so far
    load: float  # 1-min load average


def tree_rss(root: int) -> tuple[int, int, int]:
    pids = procstat.descendants(root)
    sizes = [procstat.rss_bytes(p) for p in pids]
    return sum(sizes), max(sizes, default=0), len(pids)


def sample(root: int, elapsed: float, requests: int, slice_rps: float, errors: int) -> Sample:
    rss, largest, n = tree_rss(root)
    return Sample(elapsed, rss, largest, n, requests, slice_rps, errors, os.getloadavg()[0])


def slope_mb_per_min(samples: list[Sample]) -> float | None:
    """Least-squares slope of RSS against time, MB per minute."""
    if len(samples) < 2:
        return None
    xs = [s.elapsed / 60 for s in samples]
    ys = [s.rss / 2**20 for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def mb(value: int) -> str:
    return f"{value / 2**20:,.1f}"


async def soak(
    server: harness.Server,
    workload: Workload,
    query: str,
    token: str,
    args: argparse.Namespace,
    workdir: Path,
    dataset: str,
    short: str,
    lines: list[str],
) -> None:
    body = workdir / f"{workload.key}-{server.key}.json"
    body.write_text(json.dumps({"query": query}))
    multi = args.workers > 1

    async def load(seconds: float) -> dict[str, Any]:
        command = harness.wrk_command(server, args, workload.connections, seconds)
        return await asyncio.to_thread(harness.run_wrk, command, body, token)

    with harness.running([server]):
        assert server.process is not None
        root = server.process.pid
        harness.check_alive(server)  # not someone else's server answering on the port
        answer = harness.post(server.url, query, token)
        if answer.get("errors") or not answer.get("data"):
            raise SystemExit(f"{server.name} answered errors: {json.dumps(answer)[:500]}")
        idle = tree_rss(root)
        harness.log(f"{server.name} up (log {server.log_path}); warmup {args.warmup:g} s")
        if args.warmup > 0:
            await load(args.warmup)
        harness.check_alive(server)
        samples = [sample(root, 0.0, 0, 0.0, 0)]
        out(lines, f"### {server.name}: {workload.title}, dataset {dataset}")
        out(lines)
        out(
            lines,
            f"RSS of the server's process tree: {mb(idle[0])} MB after start (idle), "
            f"{mb(samples[0].rss)} MB after the {args.warmup:g} s warmup "
            f"({samples[0].processes} process(es)).",
        )
        out(lines)
        head = "| elapsed s | RSS MB |" + (" largest process MB |" if multi else "")
        head += " requests so far | req/s (slice) | errors so far | load 1-min |"
        out(lines, head)
        out(lines, "|" + "---:|" * (head.count("|") - 1))

        def row(s: Sample) -> None:
            cells = [f"{s.elapsed:.0f}", mb(s.rss)]
            if multi:
                cells.append(mb(s.largest))
            cells += [f"{s.requests:,}", f"{s.slice_rps:,.0f}", f"{s.errors:,}", f"{s.load:.2f}"]
            out(lines, "| " + " | ".join(cells) + " |")

        row(samples[0])
        requests = errors = 0
        t0 = time.monotonic()
        for _ in range(max(1, round(args.minutes * 60 / args.interval))):
            result = await load(args.interval)
            requests += result["requests"]
            errors += sum(result[k] for k in harness.ERROR_KEYS)
            rps = result["requests"] / (result["duration_us"] / 1e6)
            harness.check_alive(server)
            samples.append(sample(root, time.monotonic() - t0, requests, rps, errors))
            row(samples[-1])
        elapsed = time.monotonic() - t0

    end = samples[-1]
    early = min(samples, key=lambda s: abs(s.elapsed - EARLY_S))
    # The last 4 minutes of samples (counted, so that slices' few ms of drift don't matter).
    window = samples[-(SLOPE_WINDOW_S // args.interval + 1) :]
    slope = slope_mb_per_min(window)
    tag = f"[{server.name}, {workload.key}, {short}]"
    out(lines)
    out(
        lines,
        f"- RSS at {early.elapsed:.0f} s: {mb(early.rss)} MB; at the end ({end.elapsed:.0f} s): "
        f"{mb(end.rss)} MB; change {(end.rss - early.rss) / 2**20:+,.1f} MB {tag}",
    )
    if multi:
        out(
            lines,
            f"- largest process at {early.elapsed:.0f} s: {mb(early.largest)} MB; at the end: "
            f"{mb(end.largest)} MB {tag}",
        )
    out(
        lines,
        f"- RSS slope from {window[0].elapsed:.0f} s to {end.elapsed:.0f} s "
        f"({len(window)} samples, least squares): "
        + ("—" if slope is None else f"{slope:+.2f} MB/min")
        + f" {tag}",
    )
    out(
        lines,
        f"- RSS min / max over the measured run: {mb(min(s.rss for s in samples))} / "
        f"{mb(max(s.rss for s in samples))} MB {tag}",
    )
    out(
        lines,
        f"- {requests:,} requests in {elapsed:.0f} s: {requests / elapsed:,.1f} req/s; "
        f"{errors:,} errors {tag}",
    )
    out(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description="RSS of the Reelgraph server over a long wrk run (figures only)."
    )
    parser.add_argument("--minutes", type=float, default=5, help="measured load, minutes")
    parser.add_argument("--workload", default="W1", help="W1, W1c1, W2 or W3")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--interval", type=int, default=10, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=10, help="seconds of load first")
    parser.add_argument("--workers", type=int, default=1, help="processes per server")
    parser.add_argument(
        "--with-postgraphile",
        action="store_true",
        help="afterwards, the same soak against PostGraphile v4 (started on its own)",
    )
    harness.add_server_options(parser, "the server", ports=(18440, 18441))
    parser.add_argument("--markdown", type=Path, help="also write the output here")
    args, url = harness.parse_args(parser)
    started = dt.datetime.now().astimezone()
    load_start = os.getloadavg()

    if args.with_postgraphile:
        harness.ensure_postgraphile_installed()
    counts = await harness.prepare_dataset(url)  # creates the database if need be
    # Read before the servers start (the revision they run), not after the run.
    try:
        software = report.software(url, harness.ROOT)
    except (OSError, ValueError, KeyError):
        software = ""
    fixture: Fixture = await harness.find_fixture(url)
    workload = next(
        (w for w in build(fixture, connections=args.connections) if w.key == args.workload),
        None,
    )
    if workload is None:
        raise SystemExit(f"unknown workload {args.workload}; one of W1, W1c1, W2, W3")
    if workload.key == "W2" and fixture.rg_chat_cursor is None:
        raise SystemExit("W2: no Reelgraph chat cursor could be made (see the log above)")
    user = (
        fixture.creator_username
        if workload.role == "creator"
        else await harness.admin_username(url)
    )
    token = harness.make_token(url, user, workload.role)
    database = urlsplit(url).path.lstrip("/")
    dataset = f"{database}: {report.dataset(counts)}"
    short = f"{database} ({counts['vods']:,} VODs)"  # named with every summary figure
    workdir = Path(tempfile.mkdtemp(prefix="rg-soak-"))
    rg, pg = harness.servers(args, url, workdir)
    harness.log(f"logs and request bodies in {workdir}")

    lines: list[str] = []
    out(lines, f"## Memory soak: {args.minutes:g} minutes of {workload.key}, dataset {dataset}")
    out(lines)
    pin = (
        f"server pinned to CPU {harness.SERVER_CPU}, wrk to CPU {harness.WRK_CPU}"
        if args.pin
        else "nothing pinned"
    )
    out(
        lines,
        f"Started {started:%Y-%m-%d %H:%M %Z}, 1-min load average {load_start[0]:.2f}. "
        f"wrk ({workload.connections} connections, 1 thread, keep-alive, "
        f"bench/graphql_post.lua) in back-to-back {args.interval} s slices after a "
        f"{args.warmup:g} s warmup; {pin}; {args.workers} process(es) per server. "
        "RSS: VmRSS summed over the server's process tree (/proc), read after each slice. "
        "Requests and errors count the measured slices only (not the warmup).",
    )
    out(lines)
    out(lines, f"Machine: {report.machine()}. {software}".rstrip())
    out(lines)
    out(lines, f"Reelgraph: `{rg.shown()}`")
    if args.with_postgraphile:
        out(lines, f"PostGraphile: `{pg.shown()}`")
    out(lines)

    await soak(rg, workload, workload.reelgraph, token, args, workdir, dataset, short, lines)
    if args.with_postgraphile:
        query = workload.postgraphile
        if workload.key == "W2":  # PostGraphile's own cursor for the deep position
            with harness.running([pg]):
                fixture = harness.with_pg_chat_cursor(fixture, pg)
            w2 = next(w for w in build(fixture, connections=args.connections) if w.key == "W2")
            query = w2.postgraphile
        await soak(pg, workload, query, token, args, workdir, dataset, short, lines)

    load_end = os.getloadavg()
    out(
        lines,
        f"Finished {dt.datetime.now().astimezone():%H:%M %Z}, 1-min load average "
        f"{load_end[0]:.2f}. Command: `"
        + shlex.join(["python", "bench/soak.py", *sys.argv[1:]])
        + "`",
    )
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
        harness.log(f"written to {args.markdown}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
