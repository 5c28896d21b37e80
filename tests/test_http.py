"""The HTTP surface: POST + JSON only, GET never executes, bodies capped, rate limits."""

from __future__ import annotations

from typing import Any

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
