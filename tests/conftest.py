"""Fixtures: a real PostgreSQL, a fresh migrated database per test, the app over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from app import create_app, open_database
from db.engine import Database
from db.migrate import upgrade
from db.seed import ensure_user
from db.users import create_token
from settings import Settings
from tests.pg import TEMPLATE, TestServer, server_url


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    yield from (TestServer(url) for url in server_url())


async def _admin_execute(server: TestServer, *statements: str) -> None:
    engine = create_async_engine(server.url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def pg_template(pg_server: TestServer) -> AsyncIterator[str]:
    await _admin_execute(
        pg_server, f"DROP DATABASE IF EXISTS {TEMPLATE}", f"CREATE DATABASE {TEMPLATE}"
    )
    engine = create_async_engine(pg_server.url_for(TEMPLATE))
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    yield TEMPLATE
    await _admin_execute(pg_server, f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")


@contextlib.asynccontextmanager
async def fresh_database(server: TestServer, template: str) -> AsyncIterator[str]:
    name = server.new_name()
    await _admin_execute(server, f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield server.url_for(name)
    finally:
        await _admin_execute(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def database_url(pg_server: TestServer, pg_template: str) -> AsyncIterator[str]:
    async with fresh_database(pg_server, pg_template) as url:
        yield url


def test_settings(url: str, **changes: Any) -> Settings:
    return Settings(database_url=url, **changes)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = open_database(test_settings(database_url), database_url)
    yield database
    await database.dispose()


class StatementLog:
    """Counts the SQL statements an engine sends, for N+1 and no-COUNT checks."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(statement)

    def clear(self) -> None:
        self.statements.clear()


@dataclass
class Client:
    http: httpx.AsyncClient
    app: Any
    sql: StatementLog

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        response = await self.post(query, variables, token)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def error_codes(body: dict[str, Any]) -> list[str]:
    """The `extensions.code` of each error of a GraphQL response body, in order."""
    return [e["extensions"]["code"] for e in body.get("errors") or []]


@contextlib.asynccontextmanager
async def running_app(settings: Settings, **options: Any) -> AsyncIterator[Client]:
    app = create_app(settings, **options)
    async with app.router.lifespan_context(app):
        sql = StatementLog()
        event.listen(app.state.services.db.engine.sync_engine, "before_cursor_execute", sql)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Client(http=http, app=app, sql=sql)


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    async with running_app(test_settings(database_url)) as c:
        yield c


@dataclass(frozen=True)
class Account:
    id: int
    token: str


async def make_account(db: Database, username: str, role: str) -> Account:
    user_id = await ensure_user(db, username=username, role=role)
    token = await db.write(lambda conn: create_token(conn, user_id=user_id, name="test"))
    return Account(id=user_id, token=token)
