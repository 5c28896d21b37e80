"""The `reelgraph` command line, run as a user runs it: real processes, real PostgreSQL."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from app import GC_YOUNG_THRESHOLD
from tests import conftest
from tests.conftest import running_app
from tests.wsclient import free_port

ROOT = Path(__file__).resolve().parent.parent


def reelgraph(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def env_for(database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REELGRAPH_", "DATABASE_URL"))}
    if database_url is not None:
        env["DATABASE_URL"] = database_url.replace("postgresql+asyncpg://", "postgresql://")
    env.update(extra)
    return env


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def records(self, logger: str | None = None) -> list[dict[str, Any]]:
        """The JSON log records (of one logger), in order."""
        lines = (line for line in self.output().splitlines() if line.startswith("{"))
        return [r for r in map(json.loads, lines) if logger in (None, r["logger"])]

    def refuses_connections(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False


@contextlib.contextmanager
def serve(database_url: str | None, *args: str, **settings: str) -> Iterator[Server]:
    """`reelgraph serve --port P *args`, as a user runs it; yields once /readyz answers."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port), *args],
            cwd=ROOT,
            env=env_for(database_url, REELGRAPH_LOG_FORMAT="json", **settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(process, port, log)
        try:
            deadline = time.monotonic() + 180  # the embedded PostgreSQL may run initdb
            while True:
                assert process.poll() is None, server.output()
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, "not ready:\n" + server.output()
                time.sleep(0.05)
            yield server
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_migrate_seed_and_create_user(database_url: str) -> None:
    env = env_for(database_url)
    assert reelgraph("migrate", env=env).returncode == 0
    seeded = reelgraph(
        "seed", "--users", "3", "--vods", "200", "--streams", "6", "--messages", "300", env=env
    )
    assert seeded.returncode == 0, seeded.stderr
    assert "vods" in seeded.stderr  # the progress bar
    created = reelgraph("create-user", "carol", "--role", "creator", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("rg_")
    bad = reelgraph("create-user", "dave", "--role", "emperor", env=env)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr


def test_serve_demo_prints_graphiql_and_working_tokens(database_url: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--demo", "--port", str(port)],
        cwd=ROOT,
        env=env_for(database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Uvicorn running" in line or "Application startup complete" in line:
                break
            assert process.poll() is None, "".join(lines)
        output = "".join(lines)
        assert f"GraphiQL: http://127.0.0.1:{port}/graphql" in output
        tokens = dict(re.findall(r"(admin|creator|viewer)\s+token .*Bearer (rg_[\w-]+)", output))
        assert set(tokens) == {"admin", "creator", "viewer"}
        base = f"http://127.0.0.1:{port}"
        page = httpx.get(f"{base}/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()
        assert httpx.get(f"{base}/healthz").text == "ok"
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}
        query = {
            "query": "{ viewer { username } "
            "vods(first: 5) { totalCount nodes { title owner { username } } } }"
        }
        admin = httpx.post(
            f"{base}/graphql", json=query, headers={"Authorization": f"Bearer {tokens['admin']}"}
        ).json()
        assert admin["data"]["viewer"]["username"] == "admin"
        assert admin["data"]["vods"]["totalCount"] >= 2900
        creator = httpx.post(
            f"{base}/graphql", json=query, headers={"Authorization": f"Bearer {tokens['creator']}"}
        ).json()
        assert 0 < creator["data"]["vods"]["totalCount"] < admin["data"]["vods"]["totalCount"]
        viewer = httpx.post(
            f"{base}/graphql", json=query, headers={"Authorization": f"Bearer {tokens['viewer']}"}
        ).json()
        assert viewer["data"]["vods"]["totalCount"] == 0
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


@pytest.mark.skipif(os.environ.get("REELGRAPH_SKIP_EMBEDDED") == "1", reason="opted out")
def test_embedded_postgres_without_database_url(tmp_path: Path) -> None:
    """The newcomer's path: no DATABASE_URL, a real PostgreSQL from the pgserver wheel."""
    env = env_for(None, REELGRAPH_DATA_DIR=str(tmp_path / "data"))
    migrated = reelgraph("migrate", env=env, timeout=180)
    assert migrated.returncode == 0, migrated.stderr
    created = reelgraph("create-user", "eve", "--role", "admin", env=env, timeout=180)
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().splitlines()[-1].startswith("rg_")


async def test_an_app_made_to_settle_the_collector_does_so_once_started(
    database_url: str,
) -> None:
    """What `serve` asks for with settle_gc: the startup heap frozen, once started."""
    threshold = gc.get_threshold()
    try:
        assert gc.get_freeze_count() == 0
        async with running_app(conftest.test_settings(database_url), settle_gc=True):
            assert gc.get_freeze_count() > 0
            assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
