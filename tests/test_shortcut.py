"""`ShortcutApp` (middleware.py): the plain JSON POST to /graphql skips Starlette's stack
and answers as the stack would; every other request takes the stack."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from middleware import ShortcutApp
from settings import Settings
from tests.conftest import make_account, running_app

QUERY = {"query": "{ viewer { username } }"}


class Recorder:
    """Wraps the app's middleware stack and counts the requests that reach it."""

    def __init__(self, app: Any) -> None:
        self.stack = app.build_middleware_stack()
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope.get("path", ""))
        await self.stack(scope, receive, send)


async def test_a_plain_post_skips_the_stack_and_answers_the_same(
    database_url: str, db: Any
) -> None:
    account = await make_account(db, "ada", "creator")
    auth = {"Authorization": f"Bearer {account.token}"}
    async with running_app(Settings(database_url=database_url)) as client:
        recorder = Recorder(client.app)
        client.app.middleware_stack = recorder
        plain = await client.http.post("/graphql", json=QUERY, headers=auth)
        assert recorder.paths == []
        # The same operation through the whole stack (a content type the guard rewrites).
        stacked = await client.http.post(
            "/graphql",
            json=QUERY,
            headers={**auth, "Content-Type": "application/json; charset=utf-8"},
        )
        assert recorder.paths == ["/graphql"]
        assert plain.status_code == stacked.status_code == 200
        assert plain.content == stacked.content == b'{"data":{"viewer":{"username":"ada"}}}'
        drop = {"x-request-id", "date"}
        assert {k: v for k, v in plain.headers.items() if k not in drop} == {
            k: v for k, v in stacked.headers.items() if k not in drop
        }

        # Everything the stack has rules for takes the stack.
        recorder.paths.clear()
        await client.http.post("/graphql", content=b"{}", headers={"Content-Type": "text/plain"})
        await client.http.get("/graphql", params=QUERY)
        await client.http.get("/healthz")

        async def chunks() -> Any:
            yield b'{"query": "{ __typename }"}'

        chunked = await client.http.post(
            "/graphql", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 200  # no Content-Length: the guard counts the body
        too_big = await client.http.post(
            "/graphql",
            content=b" " * (client.app._max_body + 1),
            headers={"Content-Type": "application/json"},
        )
        assert too_big.status_code == 413
        assert recorder.paths == ["/graphql", "/graphql", "/healthz", "/graphql", "/graphql"]


async def test_with_cors_on_a_request_with_an_origin_takes_the_stack(database_url: str) -> None:
    studio = "https://studio.example.com"
    settings = Settings(database_url=database_url, cors_origins=(studio,))
    async with running_app(settings) as client:
        recorder = Recorder(client.app)
        client.app.middleware_stack = recorder
        body = {"query": "{ __typename }"}
        await client.http.post("/graphql", json=body)
        assert recorder.paths == []
        cross = await client.http.post("/graphql", json=body, headers={"Origin": studio})
        assert recorder.paths == ["/graphql"]
        assert cross.headers["access-control-allow-origin"] == studio


class Asgi:
    """A plain ASGI app, which Starlette's Route calls as one (a function would be an
    endpoint taking a Request)."""

    def __init__(self, view: Any) -> None:
        self.view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.view(scope, receive, send)


def _app(view: Any) -> ShortcutApp:
    asgi = Asgi(view)
    return ShortcutApp(
        graphql=asgi, max_body_bytes=1000, cors=False, routes=[Route("/graphql", asgi)]
    )


async def _post(app: ShortcutApp) -> tuple[list[Message], BaseException | None]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
    }
    try:
        await app(scope, receive, send)
    except Exception as exc:
        return sent, exc
    return sent, None


@pytest.mark.parametrize("started", [False, True])
async def test_an_exception_in_the_view_is_a_plain_500_then_raised(started: bool) -> None:
    """As ServerErrorMiddleware: a 500 without traceback if nothing was sent yet; the
    exception goes on to the server (which logs it) either way."""

    async def view(scope: Scope, receive: Receive, send: Send) -> None:
        if started:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("secret detail")

    sent, raised = await _post(_app(view))
    assert isinstance(raised, RuntimeError)
    if started:
        assert [m["type"] for m in sent] == ["http.response.start"]
    else:
        assert sent[0]["status"] == 500
        assert sent[1]["body"] == b"Internal Server Error"
        assert b"secret" not in b"".join(m.get("body", b"") for m in sent)


async def test_the_stack_answers_the_same_500() -> None:
    async def view(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("secret detail")

    app = _app(view)
    shortcut, raised = await _post(app)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        stacked = await http.post(
            "/graphql", content=b"{}", headers={"Content-Type": "application/json; x=y"}
        )
    assert isinstance(raised, RuntimeError)
    assert (stacked.status_code, stacked.content) == (500, b"Internal Server Error")
    assert shortcut[0]["status"] == 500 and shortcut[1]["body"] == stacked.content
