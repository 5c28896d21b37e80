"""A minimal graphql-transport-ws client (over `websockets`) and an in-process uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect

PROTOCOL = "graphql-transport-ws"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GraphQLWS:
    """One WebSocket connection; messages of every operation arrive on `receive`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def receive(self, within: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), within)
        # Text frames: browsers' graphql-ws cannot read binary ones.
        assert isinstance(raw, str), f"a binary frame: {raw!r}"
        message: dict[str, Any] = json.loads(raw)
        return message

    async def subscribe(
        self, operation_id: str, query: str, variables: dict[str, Any] | None = None
    ) -> None:
        await self.send(
            {
                "id": operation_id,
                "type": "subscribe",
                "payload": {"query": query, "variables": variables or {}},
            }
        )

    async def complete(self, operation_id: str) -> None:
        await self.send({"id": operation_id, "type": "complete"})


@contextlib.asynccontextmanager
async def graphql_ws(url: str, token: str | None) -> AsyncIterator[GraphQLWS]:
    """Connect, send connection_init with the token, and wait for connection_ack."""
    async with connect(url, subprotocols=[PROTOCOL], open_timeout=10) as ws:  # type: ignore[list-item]
        client = GraphQLWS(ws)
        payload = {"Authorization": f"Bearer {token}"} if token else {}
        await client.send({"type": "connection_init", "payload": payload})
        ack = await client.receive()
        assert ack["type"] == "connection_ack", ack
        yield client


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[uvicorn.Server]:
    """Run `app` under a real uvicorn on this event loop (lifespan included)."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def ws_url(server: uvicorn.Server) -> str:
    return f"ws://127.0.0.1:{server.config.port}/graphql"


def http_url(server: uvicorn.Server) -> str:
    return f"http://127.0.0.1:{server.config.port}"
