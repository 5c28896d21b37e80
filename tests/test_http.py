"""The HTTP surface: POST + JSON only, GET never executes, bodies capped, rate limits."""

from __future__ import annotations

from typing import Any

import orjson

from db.engine import Database
from settings import Settings
from tests.conftest import make_account, running_app

QUERY = "{ viewer { username } }"


async def test_only_json_posts_execute(database_url: str, db: Database) -> None:
    account = await make_account(db, "ada", "creator")
    auth = {"Authorization": f"Bearer {account.token}"}
    async with running_app(Settings(database_url=database_url)) as client:
        ok = await client.http.post("/graphql", json={"query": QUERY}, headers=auth)
        assert ok.status_code == 200 and ok.json()["data"]["viewer"]["username"] == "ada"
        assert ok.headers["x-request-id"]
        graphql_json = await client.http.post(
            "/graphql",
            content=b'{"query": "{ viewer { username } }"}',
            headers={**auth, "Content-Type": "application/graphql-response+json"},
        )
        assert graphql_json.status_code == 200
        rejected: list[Any] = [
            await client.http.post("/graphql", data={"query": QUERY}, headers=auth),
            await client.http.post(
                "/graphql", content=QUERY, headers={**auth, "Content-Type": "text/plain"}
            ),
            await client.http.post(
                "/graphql",
                files={"operations": (None, '{"query": "{ viewer { id } }"}')},
                headers=auth,
            ),
        ]
        for response in rejected:
            assert response.status_code == 415, response.text
            assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        get = await client.http.get("/graphql", params={"query": QUERY}, headers=auth)
        assert get.status_code == 405 and get.headers["allow"] == "POST"
        browser = await client.http.get("/graphql", headers={"Accept": "text/html"})
        assert browser.status_code == 200 and "graphiql" in browser.text.lower()
        batch = await client.http.post("/graphql", json=[{"query": QUERY}] * 2, headers=auth)
        assert batch.status_code == 400


async def test_bodies_over_the_cap_are_rejected(database_url: str) -> None:
    async with running_app(Settings(database_url=database_url)) as client:
        big = b'{"query": "{ viewer { id } }", "x": "' + b"a" * (10 * 1024 * 1024) + b'"}'
        response = await client.http.post(
            "/graphql", content=big, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413

        async def chunks() -> Any:
            for _ in range(20):
                yield b"a" * 100_000

        streamed = await client.http.post(
            "/graphql", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413


async def test_rate_limit_answers_429_with_retry_after(database_url: str, db: Database) -> None:
    ada = await make_account(db, "ada", "creator")
    bob = await make_account(db, "bob", "creator")
    settings = Settings(database_url=database_url, rate_limit_budget=5000, max_cost=5000)
    query = "{ vods(first: 100) { nodes { id } } }"  # cost 101
    now = [0.0]
    async with running_app(settings, clock=lambda: now[0]) as client:
        statuses = []
        for _ in range(60):
            response = await client.post(query, token=ada.token)
            statuses.append(response.status_code)
            if response.status_code == 429:
                body = response.json()
                assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
                assert int(response.headers["retry-after"]) >= 1
                break
        # The clock stands still: 5000 // 101 = 49 queries fit, the 50th is refused.
        assert statuses == [200] * 49 + [429]
        other = await client.post(query, token=bob.token)
        assert other.status_code == 200 and "errors" not in other.json()
        now[0] += 60.0  # a full period later the budget is back
        again = await client.post(query, token=ada.token)
        assert again.status_code == 200


def graphql_error(response: Any, status: int) -> tuple[str, str]:
    """A GraphQL JSON error body with the given HTTP status: (message, extensions.code)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"]
    body = response.json()
    assert set(body) == {"errors"}, body
    [error] = body["errors"]
    return error["message"], error["extensions"]["code"]


HEALTH = 'subscription Health { liveStreamHealth(streamId: "TGl2ZVN0cmVhbTox") { viewerCount } }'
CHAT = 'subscription Chat { chatMessageAdded(streamId: "TGl2ZVN0cmVhbTox") { id } }'


async def test_subscriptions_over_http_are_refused_with_a_typed_400(
    database_url: str, db: Database
) -> None:
    account = await make_account(db, "ada", "creator")
    auth = {"Authorization": f"Bearer {account.token}"}
    async with running_app(Settings(database_url=database_url)) as client:
        # What GraphiQL's HTTP fetcher sends, plain JSON, and multipart subscriptions:
        # none of them runs a subscription over HTTP.
        for accept in (
            "application/json, multipart/mixed",
            "application/json",
            'multipart/mixed;subscriptionSpec="1.0", application/json',
            "text/event-stream",
        ):
            for query in (HEALTH, CHAT):
                response = await client.http.post(
                    "/graphql", json={"query": query}, headers={**auth, "Accept": accept}
                )
                message, code = graphql_error(response, 400)
                assert code == "BAD_USER_INPUT"
                assert message == (
                    "Subscriptions run over WebSocket (graphql-transport-ws) at /graphql."
                )
        # The operation chosen decides: a query beside a subscription still runs.
        both = f"query Me {{ viewer {{ username }} }} {HEALTH}"
        chosen = await client.http.post(
            "/graphql", json={"query": both, "operationName": "Health"}, headers=auth
        )
        assert graphql_error(chosen, 400)[1] == "BAD_USER_INPUT"
        me = await client.http.post(
            "/graphql", json={"query": both, "operationName": "Me"}, headers=auth
        )
        assert me.status_code == 200 and me.json() == {"data": {"viewer": {"username": "ada"}}}


async def test_http_level_errors_are_graphql_json(database_url: str) -> None:
    async with running_app(Settings(database_url=database_url)) as client:

        async def post(body: Any) -> Any:
            content = body if isinstance(body, bytes) else orjson.dumps(body)
            return await client.http.post(
                "/graphql", content=content, headers={"Content-Type": "application/json"}
            )

        two = "query A { viewer { id } } query B { viewer { id } }"
        message, code = graphql_error(await post({"query": two, "operationName": "Nope"}), 400)
        assert (message, code) == ('Unknown operation named "Nope".', "GRAPHQL_VALIDATION_FAILED")
        fragment_only = {"query": "fragment F on Query { viewer { id } }"}
        assert graphql_error(await post(fragment_only), 400) == (
            "The document has no operation to run.",
            "GRAPHQL_VALIDATION_FAILED",
        )
        one = await post({"query": "query A { viewer { id } }", "operationName": "B"})
        assert graphql_error(one, 400) == (
            'Unknown operation named "B".',
            "GRAPHQL_VALIDATION_FAILED",
        )
        for body in (
            b'{"query": ',  # not JSON
            b"\xff\xfe",  # not UTF-8
            b"",
            {},  # no query
            {"query": None},
            {"query": ""},
            {"query": 5},
            {"query": QUERY, "variables": [1]},
            {"query": QUERY, "extensions": "x"},
            "{ viewer { id } }",  # JSON, but not an object
            5,
            None,
            [{"query": QUERY}] * 2,  # batching is off
        ):
            message, code = graphql_error(await post(body), 400)
            assert code == "BAD_USER_INPUT", (body, message)
            assert message.endswith("."), message
        # Other methods: 405 with Allow, as GET with a query is (middleware.py).
        put = await client.http.put("/graphql", json={"query": QUERY})
        assert graphql_error(put, 405)[1] == "BAD_USER_INPUT"
        assert put.headers["allow"] == "GET, POST"
        # Syntax errors were already GraphQL JSON (200, GRAPHQL_PARSE_FAILED): unchanged.
        syntax = await post({"query": "{ viewer { id }"})
        assert syntax.status_code == 200
        assert syntax.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
