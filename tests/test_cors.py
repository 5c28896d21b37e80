"""CORS for the studio's origins (REELGRAPH_CORS_ORIGINS); nothing is allowed by default."""

from __future__ import annotations

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from app import create_app
from settings import Settings, SettingsError
from tests import conftest
from tests.wsclient import PROTOCOL, serve, ws_url

STUDIO = "https://studio.example.com"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


async def test_preflight_and_post_from_an_allowed_origin(database_url: str) -> None:
    settings = conftest.test_settings(database_url, cors_origins=(STUDIO,))
    async with conftest.running_app(settings) as client:
        preflight = await client.http.options("/graphql", headers={"Origin": STUDIO, **PREFLIGHT})
        assert preflight.status_code == 200  # answered before the POST-only guard
        allowed = cors_headers(preflight)
        assert allowed["access-control-allow-origin"] == STUDIO
        assert set(allowed["access-control-allow-methods"].split(", ")) == {
            "GET",
            "POST",
            "OPTIONS",
        }
        assert {"authorization", "content-type"} <= set(
            allowed["access-control-allow-headers"].split(", ")
        )
        assert "access-control-allow-credentials" not in allowed  # tokens, not cookies

        post = await client.http.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"Origin": STUDIO}
        )
        assert post.status_code == 200
        assert post.headers["access-control-allow-origin"] == STUDIO
        assert "x-request-id" in post.headers["access-control-expose-headers"]
        assert "origin" in post.headers["vary"].lower()

        # The guard's refusals reach the studio readable, too.
        refused = await client.http.post(
            "/graphql", content=b"{}", headers={"Origin": STUDIO, "Content-Type": "text/plain"}
        )
        assert refused.status_code == 415
        assert refused.headers["access-control-allow-origin"] == STUDIO


async def test_a_foreign_origin_gets_no_cors_headers(database_url: str) -> None:
    settings = conftest.test_settings(database_url, cors_origins=(STUDIO,))
    async with conftest.running_app(settings) as client:
        for origin in ("https://evil.example", "https://studio.example.com.evil.example"):
            preflight = await client.http.options(
                "/graphql", headers={"Origin": origin, **PREFLIGHT}
            )
            assert preflight.status_code == 400
            assert cors_headers(preflight) == {}
            post = await client.http.post(
                "/graphql", json={"query": "{ __typename }"}, headers={"Origin": origin}
            )
            assert "access-control-allow-origin" not in post.headers


async def test_default_settings_allow_no_origin(database_url: str) -> None:
    async with conftest.running_app(conftest.test_settings(database_url)) as client:
        preflight = await client.http.options("/graphql", headers={"Origin": STUDIO, **PREFLIGHT})
        assert cors_headers(preflight) == {}
        post = await client.http.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"Origin": STUDIO}
        )
        assert post.status_code == 200
        assert cors_headers(post) == {}


async def test_websocket_handshakes_follow_the_same_origins(database_url: str) -> None:
    """Browsers don't apply CORS to WebSockets: the handshake's Origin is checked."""
    app = create_app(conftest.test_settings(database_url, cors_origins=(STUDIO,)))
    async with serve(app) as server:
        url = ws_url(server)
        protocols = [Subprotocol(PROTOCOL)]
        async with connect(url, subprotocols=protocols, origin=Origin(STUDIO)) as ws:
            await ws.send('{"type": "connection_init", "payload": {}}')
            assert "connection_ack" in str(await ws.recv())
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, subprotocols=protocols, origin=Origin("https://evil.example")):
                pass
        assert refused.value.response.status_code == 403


def test_origins_setting() -> None:
    env = {"REELGRAPH_CORS_ORIGINS": f" {STUDIO}, http://localhost:5173 ,"}
    assert Settings.from_env(env).cors_origins == (STUDIO, "http://localhost:5173")
    assert Settings.from_env({}).cors_origins == ()
    for bad in (f"{STUDIO}/", "studio.example.com", f"{STUDIO}/app"):
        with pytest.raises(SettingsError):
            Settings.from_env({"REELGRAPH_CORS_ORIGINS": bad})
