"""Cross-instance fan-out: two real server processes on one database, LISTEN/NOTIFY between."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from db.engine import Database
from resolvers.ids import encode_id
from tests.conftest import make_account
from tests.factories import insert_stream
from tests.wsclient import free_port, graphql_ws

ROOT = Path(__file__).resolve().parent.parent

SEND = """mutation($input: SendChatMessageInput!) {
  sendChatMessage(input: $input) { message { id } errors { code } } }"""
SUBSCRIBE = """subscription($streamId: ID!) {
  chatMessageAdded(streamId: $streamId) { id body author { username } } }"""


@contextlib.contextmanager
def server_process(database_url: str) -> Iterator[str]:
    """`uvicorn --factory app:app_from_env` on a free port; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REELGRAPH_", "DATABASE_URL"))}
    env["DATABASE_URL"] = database_url.replace("postgresql+asyncpg://", "postgresql://")
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "--factory", "app:app_from_env"),
                *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "the server exited"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the server did not become ready"
                time.sleep(0.1)
            yield base
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
            log.seek(0)
            output = log.read().decode(errors="replace")
            # uvicorn shuts down gracefully, then re-raises the signal it caught.
            assert code in (0, -signal.SIGTERM), output
            assert "Traceback" not in output, output


async def send(http: httpx.AsyncClient, token: str, stream: str, body: str) -> str:
    response = await http.post(
        "/graphql",
        json={
            "query": SEND,
            "variables": {"input": {"streamId": stream, "body": body, "clientMutationId": body}},
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    payload: dict[str, Any] = response.json()["data"]["sendChatMessage"]
    assert payload["errors"] == [], payload
    return str(payload["message"]["id"])


async def test_a_message_sent_through_one_instance_reaches_a_subscriber_on_another(
    database_url: str, db: Database
) -> None:
    ada = await make_account(db, "ada", "creator")
    stream = encode_id("LiveStream", await insert_stream(db, owner_id=ada.id, status="live"))
    with server_process(database_url) as first, server_process(database_url) as second:
        ws_url = first.replace("http://", "ws://") + "/graphql"
        async with (
            graphql_ws(ws_url, ada.token) as ws,
            httpx.AsyncClient(base_url=second, timeout=10) as http,
        ):
            await ws.subscribe("1", SUBSCRIBE, {"streamId": stream})
            # The protocol has no "subscribed" acknowledgement: send until one arrives, so
            # the measured message below is not racing the subscription's registration.
            for attempt in range(20):
                warm = await send(http, ada.token, stream, f"warm-up {attempt}")
                with contextlib.suppress(TimeoutError):
                    event = await ws.receive(within=1.0)
                    assert event["payload"]["data"]["chatMessageAdded"]["id"] == warm
                    break
            else:
                raise AssertionError("the subscription never received a warm-up message")

            started = time.perf_counter()
            sent = await send(http, ada.token, stream, "across instances")
            event = await ws.receive(within=1.0)
            latency = time.perf_counter() - started
            assert event == {
                "id": "1",
                "type": "next",
                "payload": {
                    "data": {
                        "chatMessageAdded": {
                            "id": sent,
                            "body": "across instances",
                            "author": {"username": "ada"},
                        }
                    }
                },
            }
            print(f"\ncross-instance send -> receive: {latency * 1000:.1f} ms")
            assert latency < 1.0
