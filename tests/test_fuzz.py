"""Generated queries (hypothesis-graphql) against every Query root field, for two users.

Checks, for every response: no HTTP 5xx, every error carries a known code, and no object
appears that the token's user may not see.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_graphql import mutations, queries
from sqlalchemy import insert, text

from app import export_schema
from db.engine import Database
from db.tables import chat_messages
from resolvers.errors import BadUserInput
from resolvers.ids import decode_id, encode_id
from schema import build_schema
from schema.errors import CODES
from settings import Settings
from tests.conftest import Account, Client, fresh_database, make_account, running_app
from tests.factories import insert_stream, insert_vods, vod_values
from tests.pg import TestServer

KNOWN_CODES = CODES
ROOT_FIELDS = sorted(build_schema()._schema.query_type.fields)  # type: ignore[union-attr]
MUTATION_FIELDS = sorted(build_schema()._schema.mutation_type.fields)  # type: ignore[union-attr]
EXAMPLES = 500


class World:
    def __init__(self) -> None:
        self.client: Client
        self.users: dict[str, Account] = {}
        self.visible: dict[str, dict[str, set[int]]] = {}
        self.checked: Counter[str] = Counter()  # ids whose visibility was verified


@pytest.fixture(scope="module")
async def world(pg_server: TestServer, pg_template: str) -> AsyncIterator[World]:
    async with fresh_database(pg_server, pg_template) as url:
        world = World()
        settings_ = Settings(database_url=url, rate_limit_budget=10**9)
        async with running_app(settings_) as client:
            db: Database = client.app.state.services.db
            world.client = client
            rng = random.Random(1)
            for name in ("ada", "bob"):
                world.users[name] = await make_account(db, name, "creator")
            for account in world.users.values():
                ids = await insert_vods(db, [vod_values(account.id, rng) for _ in range(25)])
                live = await insert_stream(db, owner_id=account.id, status="live")
                await insert_stream(db, owner_id=account.id, status="ended", vod_video_id=ids[0])

                async def chat(conn: Any, stream: int = live, user: int = account.id) -> None:
                    await conn.execute(
                        insert(chat_messages),
                        [
                            {
                                "stream_id": stream,
                                "user_id": user,
                                "body": f"hi {i}",
                                "client_mutation_id": f"seed-{stream}-{i}",
                            }
                            for i in range(10)
                        ],
                    )

                await db.write(chat)
            for name, account in world.users.items():
                world.visible[name] = await visible_ids(db, account.id)
            yield world


async def visible_ids(db: Database, user_id: int) -> dict[str, set[int]]:
    async def ids(sql: str) -> set[int]:
        result = await db.read(lambda c: c.execute(text(sql), {"u": user_id}))
        return {int(i) for i in result.scalars()}

    return {
        "Vod": await ids(
            "SELECT id FROM videos WHERE deleted_at IS NULL AND (owner_id = :u OR id IN "
            "(SELECT vod_video_id FROM live_streams WHERE owner_id = :u))"
        ),
        "LiveStream": await ids("SELECT id FROM live_streams WHERE owner_id = :u"),
        "ChatMessage": await ids(
            "SELECT m.id FROM chat_messages m JOIN live_streams s ON s.id = m.stream_id "
            "WHERE s.owner_id = :u AND m.deleted_at IS NULL"
        ),
        "User": await ids("SELECT id FROM users"),
    }


def global_ids(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "id" and isinstance(item, str):
                yield item
            else:
                yield from global_ids(item)
    elif isinstance(value, list):
        for item in value:
            yield from global_ids(item)


async def check(world: World, query: str) -> None:
    for name, account in world.users.items():
        response = await world.client.post(query, token=account.token)
        assert response.status_code < 500, (query, response.text)
        if response.status_code != 200:
            continue
        body = response.json()
        for error in body.get("errors", []):
            assert error.get("extensions", {}).get("code") in KNOWN_CODES, (query, error)
            assert "Traceback" not in error["message"] and "SELECT" not in error["message"]
        for global_id in global_ids(body.get("data")):
            try:
                type_name, pk = decode_id(global_id)
            except BadUserInput:
                continue  # not a global id (e.g. a field that echoes input)
            assert pk in world.visible[name][type_name], (name, query, global_id)
            world.checked[type_name] += 1


SDL = export_schema()


def generated(field: str, *, mutation: bool = False) -> list[str]:
    """EXAMPLES operations for one root field, generated up front (deterministic)."""
    found: list[str] = []
    strategy = mutations if mutation else queries

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(query=strategy(SDL, fields=[field], allow_x00=True))
    def collect(query: str) -> None:
        found.append(query)

    collect()
    return found


@pytest.mark.parametrize("field", ROOT_FIELDS)
async def test_generated_queries_are_answered_safely(world: World, field: str) -> None:
    sent = generated(field)
    arguments = build_schema()._schema.query_type.fields[field].args  # type: ignore[union-attr]
    # An argument-less field like `viewer` has fewer distinct queries than EXAMPLES;
    # hypothesis stops when it has generated them all.
    assert len(sent) >= EXAMPLES or not arguments, len(sent)
    before = sum(world.checked.values())
    for query in sent:
        await check(world, query)
    if field == "viewer":
        assert sum(world.checked.values()) > before, "no object's visibility was checked"


@pytest.mark.parametrize("field", MUTATION_FIELDS)
async def test_generated_mutations_are_answered_safely(world: World, field: str) -> None:
    sent = generated(field, mutation=True)
    assert len(sent) >= EXAMPLES
    for mutation in sent:
        await check(world, mutation)


SEARCHES = [
    "'; DROP TABLE videos; --",
    '" OR 1=1 --',
    "%' UNION SELECT * FROM api_tokens --",
    "\\",
    "%%",
    "_",
    "\x00",
]


@pytest.mark.parametrize("search", SEARCHES)
async def test_injection_strings_are_inert(world: World, search: str) -> None:
    db: Database = world.client.app.state.services.db
    before = (await db.read(lambda c: c.execute(text("SELECT count(*) FROM videos")))).scalar()
    query = "query($f: VodFilter) { vods(filter: $f) { totalCount nodes { id } } }"
    for account in world.users.values():
        response = await world.client.post(query, {"f": {"search": search}}, token=account.token)
        assert response.status_code == 200
        body = response.json()
        if "errors" in body:
            assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
            continue
        literal = await db.read(
            lambda c, u=account.id: c.execute(
                text(
                    "SELECT count(*) FROM videos WHERE owner_id = :u AND deleted_at IS NULL "
                    "AND strpos(lower(title), lower(:s)) > 0"
                ),
                {"u": u, "s": search},
            )
        )
        assert body["data"]["vods"]["totalCount"] == literal.scalar()
    order = '{ vods(orderBy: {field: "title; DROP TABLE videos"}) { totalCount } }'
    body = (await world.client.post(order, token=world.users["ada"].token)).json()
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    after = (await db.read(lambda c: c.execute(text("SELECT count(*) FROM videos")))).scalar()
    assert before == after


DEEP = """query($after: String) {
  vods(first: 20, after: $after) { pageInfo { hasNextPage endCursor } nodes { id
    owner { id } stream { id vod { id } chatMessages(first: 20) { nodes { id author { id } } } }
  } }
  liveStreams(first: 20) { nodes { id vod { id stream { id } }
    chatMessages(first: 20) { nodes { id stream { id } } } } }
}"""


async def test_every_object_reachable_is_visible_and_every_id_is_checked(world: World) -> None:
    """Generated arguments are mostly invalid, so sweep the whole graph explicitly too."""
    db: Database = world.client.app.state.services.db
    everything: list[str] = []
    for table, type_name in (
        ("videos", "Vod"),
        ("live_streams", "LiveStream"),
        ("chat_messages", "ChatMessage"),
    ):
        ids = await db.read(lambda c, t=table: c.execute(text(f"SELECT id FROM {t}")))
        everything += [encode_id(type_name, int(i)) for i in ids.scalars()]
    for name, account in world.users.items():
        seen: set[tuple[str, int]] = set()
        for start in range(0, len(everything), 100):
            body = await world.client.gql(
                "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
                {"ids": everything[start : start + 100]},
                token=account.token,
            )
            seen |= {decode_id(n["id"]) for n in body["data"]["nodes"] if n is not None}
        cursor = None
        while True:
            body = await world.client.gql(DEEP, {"after": cursor}, token=account.token)
            assert "errors" not in body, body
            seen |= {decode_id(i) for i in global_ids(body["data"])}
            info = body["data"]["vods"]["pageInfo"]
            if not info["hasNextPage"]:
                break
            cursor = info["endCursor"]
        expected = {(t, pk) for t, pks in world.visible[name].items() for pk in pks if t != "User"}
        assert {(t, pk) for t, pk in seen if t != "User"} == expected
