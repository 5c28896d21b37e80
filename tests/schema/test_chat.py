"""Live chat over GraphQL: pages, sends, deletes and subscriptions, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app import create_app
from db import chat as chat_queries
from db.direct import compile_statement
from db.direct import fetch as direct_fetch
from db.engine import Database
from db.sql import Access
from resolvers.ids import decode_id, encode_id
from tests import conftest
from tests.conftest import Account, Client, error_codes, make_account
from tests.db.admin import eventually
from tests.factories import insert_stream
from tests.wsclient import graphql_ws, http_url, serve, ws_url

PAGE = """
query Chat($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  node(id: $id) {
    ... on LiveStream {
      chatMessages(first: $first, after: $after, last: $last, before: $before) {
        edges { cursor node { id body author { username } } }
        nodes { id }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      }
    }
  }
}
"""

SEND = """
mutation Send($input: SendChatMessageInput!) {
  sendChatMessage(input: $input) {
    clientMutationId
    message { id body author { username } stream { id title } }
    errors { code message field }
  }
}
"""

DELETE = """
mutation Delete($input: DeleteChatMessageInput!) {
  deleteChatMessage(input: $input) { deletedMessageId clientMutationId }
}
"""

SUBSCRIBE = """
subscription Added($streamId: ID!) {
  chatMessageAdded(streamId: $streamId) {
    id body author { username displayName } stream { id title }
  }
}
"""


@dataclass
class Chat:
    admin: Account
    ada: Account
    bob: Account
    vic: Account
    live: int  # Ada's live stream, with history
    ended: int  # Ada's ended stream
    bobs: int  # Bob's live stream

    @property
    def live_id(self) -> str:
        return encode_id("LiveStream", self.live)


async def insert_messages(
    db: Database, stream_id: int, user_ids: list[int], count: int, *, deleted_every: int = 0
) -> list[int]:
    """`count` messages in id order; every `deleted_every`-th one soft-deleted."""
    sql = text(
        """
        INSERT INTO chat_messages (stream_id, user_id, body, client_mutation_id, deleted_at)
        SELECT CAST(:stream AS bigint), u.ids[1 + g % cardinality(u.ids)], 'message ' || g,
               'fixture-' || gen_random_uuid(),
               CASE WHEN g % CAST(:every AS int) = 0 THEN now() END
        FROM generate_series(1, CAST(:n AS int)) AS g, (SELECT CAST(:users AS bigint[]) AS ids) AS u
        ORDER BY g
        RETURNING id
        """
    )

    async def run(conn: AsyncConnection) -> list[int]:
        result = await conn.execute(
            sql,
            {
                "stream": stream_id,
                "users": user_ids,
                "n": count,
                "every": deleted_every or count + 1,
            },
        )
        return sorted(int(i) for i in result.scalars())

    return await db.write(run)


async def live_ids(db: Database, stream_id: int) -> list[int]:
    """Every visible message of the stream, newest first: what a full walk must return."""
    result = await db.read(
        lambda conn: conn.execute(
            text(
                "SELECT id FROM chat_messages WHERE stream_id = :s AND deleted_at IS NULL "
                "ORDER BY id DESC"
            ),
            {"s": stream_id},
        )
    )
    return [int(i) for i in result.scalars()]


async def row_count(db: Database, where: str = "true", **params: Any) -> int:
    result = await db.read(
        lambda conn: conn.execute(text(f"SELECT count(*) FROM chat_messages WHERE {where}"), params)
    )
    return int(result.scalar_one())


@pytest.fixture
async def chat(db: Database) -> Chat:
    admin = await make_account(db, "root", "admin")
    ada = await make_account(db, "ada", "creator")
    bob = await make_account(db, "bob", "creator")
    vic = await make_account(db, "vic", "viewer")
    live = await insert_stream(db, owner_id=ada.id, status="live", title="Ada live")
    ended = await insert_stream(db, owner_id=ada.id, status="ended", title="Ada ended")
    bobs = await insert_stream(db, owner_id=bob.id, status="live", title="Bob live")
    users = [ada.id, bob.id, vic.id, admin.id]
    await insert_messages(db, live, users, 130, deleted_every=7)
    await insert_messages(db, bobs, users, 20)
    await insert_messages(db, ended, users, 5)
    return Chat(admin, ada, bob, vic, live, ended, bobs)


def ids_of(connection: dict[str, Any]) -> list[int]:
    return [decode_id(e["node"]["id"])[1] for e in connection["edges"]]


async def fetch(client: Client, token: str, stream: str, **args: Any) -> dict[str, Any]:
    body = await client.gql(PAGE, {"id": stream, **args}, token=token)
    assert "errors" not in body, body
    connection: dict[str, Any] = body["data"]["node"]["chatMessages"]
    return connection


async def walk(
    client: Client, token: str, stream: str, *, backward: bool, size: int, between: Any = None
) -> list[int]:
    seen: list[int] = []
    cursor: str | None = None
    while True:
        args = {"last": size, "before": cursor} if backward else {"first": size, "after": cursor}
        page = await fetch(client, token, stream, **args)
        page_ids = ids_of(page)
        assert [n["id"] for n in page["nodes"]] == [e["node"]["id"] for e in page["edges"]]
        assert page_ids == sorted(page_ids, reverse=True), "a page is newest first"
        seen = page_ids + seen if backward else seen + page_ids
        info = page["pageInfo"]
        if page_ids:
            assert info["startCursor"] == page["edges"][0]["cursor"]
            assert info["endCursor"] == page["edges"][-1]["cursor"]
        if between is not None:
            await between()
        if not (info["hasPreviousPage"] if backward else info["hasNextPage"]):
            return seen
        assert len(page_ids) == size
        cursor = info["startCursor"] if backward else info["endCursor"]


async def test_walking_every_page_both_ways_yields_each_message_once_newest_first(
    client: Client, db: Database, chat: Chat
) -> None:
    expected = await live_ids(db, chat.live)
    assert len(expected) == 130 - 130 // 7
    for token in (chat.ada.token, chat.admin.token):
        for size in (1, 7, 50, 100):
            assert await walk(client, token, chat.live_id, backward=False, size=size) == expected
            assert await walk(client, token, chat.live_id, backward=True, size=size) == expected
    # Default page: the 50 newest; the first page has no previous page.
    page = await fetch(client, chat.ada.token, chat.live_id)
    assert ids_of(page) == expected[:50]
    assert page["pageInfo"]["hasNextPage"] and not page["pageInfo"]["hasPreviousPage"]
    # `last` alone: the oldest messages, still newest first within the page.
    page = await fetch(client, chat.ada.token, chat.live_id, last=3)
    assert ids_of(page) == expected[-3:]
    assert page["pageInfo"]["hasPreviousPage"] and not page["pageInfo"]["hasNextPage"]
    # `after` and `before` together bound the page on both sides.
    first = await fetch(client, chat.ada.token, chat.live_id, first=10)
    older = await fetch(
        client, chat.ada.token, chat.live_id, first=10, after=first["edges"][2]["cursor"]
    )
    between = await fetch(
        client,
        chat.ada.token,
        chat.live_id,
        first=50,
        after=first["edges"][2]["cursor"],
        before=older["edges"][5]["cursor"],
    )
    assert ids_of(between) == expected[3:8]


async def test_walk_stays_exact_while_messages_are_sent(
    client: Client, db: Database, chat: Chat
) -> None:
    before = await live_ids(db, chat.live)
    sent = 0

    async def send_one() -> None:
        nonlocal sent
        sent += 1
        body = await client.gql(
            SEND,
            {
                "input": {
                    "streamId": chat.live_id,
                    "body": f"live {sent}",
                    "clientMutationId": f"w{sent}",
                }
            },
            token=chat.ada.token,
        )
        assert body["data"]["sendChatMessage"]["errors"] == [], body

    forward = await walk(
        client, chat.ada.token, chat.live_id, backward=False, size=9, between=send_one
    )
    # Newer messages land before the first page: a forward walk sees exactly the old set.
    assert forward == before
    backward = await walk(
        client, chat.ada.token, chat.live_id, backward=True, size=9, between=send_one
    )
    assert len(backward) == len(set(backward)), "a message was returned twice"
    assert set(before) <= set(backward), "a message that existed throughout was skipped"
    final = await live_ids(db, chat.live)
    assert backward == [i for i in final if i in set(backward)], "pages are out of order"
    assert len(backward) > len(before), "the backward walk reached the messages sent meanwhile"


async def test_a_chat_page_issues_no_count_and_constant_statements(
    client: Client, chat: Chat
) -> None:
    query = """query($id: ID!, $n: Int!) { node(id: $id) { ... on LiveStream {
      chatMessages(first: $n) { nodes { id body author { username }
        stream { id owner { username } } } } } } }"""
    counts = {}
    await client.gql("{ viewer { id } }", token=chat.admin.token)  # records the token's use
    for n in (1, 10, 100):
        client.sql.clear()
        body = await client.gql(query, {"id": chat.live_id, "n": n}, token=chat.admin.token)
        assert len(body["data"]["node"]["chatMessages"]["nodes"]) == n
        assert not any("count(" in s.lower() for s in client.sql.statements), client.sql.statements
        counts[n] = len(client.sql.statements)
    assert counts[1] == counts[10] == counts[100], counts


async def _plan(conn: AsyncConnection, statement_and_values: Any) -> dict[str, Any]:
    statement, values = statement_and_values
    compiled = statement.compile(dialect=conn.dialect)
    params = tuple({**compiled.params, **values}[name] for name in compiled.positiontup)
    result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", params)
    raw = result.scalar_one()
    plan: dict[str, Any] = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    return plan


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


# PAGE with the page behind @include: `node` cannot look ahead, and reads the stream and
# the page in two statements (the stream's loader, then the page).
ORDINARY_PAGE = PAGE.replace(
    "chatMessages(first: $first, after: $after, last: $last, before: $before)",
    "chatMessages(first: $first, after: $after, last: $last, before: $before) @include(if: true)",
)


async def test_node_reads_a_stream_and_its_chat_page_in_one_statement_with_the_same_answer(
    client: Client, db: Database, chat: Chat
) -> None:
    assert ORDINARY_PAGE != PAGE
    quiet = await insert_stream(db, owner_id=chat.ada.id, status="live", title="Ada quiet")
    newest = await live_ids(db, chat.live)
    first = await fetch(client, chat.ada.token, chat.live_id, first=10)
    older, newer = first["edges"][7]["cursor"], first["edges"][2]["cursor"]
    pages: list[dict[str, Any]] = [
        {},
        {"first": 5},
        {"first": 5, "after": older},
        {"last": 4},
        {"last": 4, "before": newer},
        {"first": 3, "after": newer, "before": older},
        {"last": 100},
    ]
    bad: list[dict[str, Any]] = [{"first": 0}, {"after": "garbage"}, {"first": 2, "last": 2}]
    streams = [
        (chat.ada.token, chat.live, True),
        (chat.admin.token, chat.live, True),
        (chat.ada.token, chat.ended, True),
        (chat.ada.token, quiet, True),  # no messages: the stream, an empty page
        (chat.ada.token, chat.bobs, False),  # Bob's: hidden from Ada
        (chat.vic.token, chat.live, False),
        (chat.admin.token, 10**12, False),  # no such stream
    ]
    for token, _, _ in streams:
        await client.gql("{ viewer { id } }", token=token)  # records the token's use
    for token, stream, visible in streams:
        for args, valid in [(a, True) for a in pages] + [(a, False) for a in bad]:
            # A cursor of the live stream's chat is another stream's bad cursor.
            valid = valid and (stream == chat.live or not {"after", "before"} & set(args))
            variables = {"id": encode_id("LiveStream", stream), **args}
            answers, counts = [], []
            for query in (PAGE, ORDINARY_PAGE):
                client.sql.clear()
                answers.append(await client.gql(query, variables, token=token))
                counts.append(len(client.sql.statements))
            case = (stream, args, token == chat.admin.token)
            assert answers[0] == answers[1], case
            if not visible:
                assert answers[0] == {"data": {"node": None}}, case
                assert counts == [1, 1], case
            elif valid:
                assert "errors" not in answers[0], case
                assert counts == [1, 2], case
            else:  # the look-ahead declines: the field reports the error, as it always did
                assert error_codes(answers[0]) == ["BAD_USER_INPUT"], case
                assert counts == [1, 1], case
    body = await client.gql(PAGE, {"id": encode_id("LiveStream", quiet)}, token=chat.ada.token)
    assert body["data"]["node"]["chatMessages"]["nodes"] == []
    page = await fetch(client, chat.ada.token, chat.live_id, first=5, after=older)
    assert ids_of(page) == newest[8:13]


async def test_node_looks_ahead_through_fragments_and_not_past_aliases(
    client: Client, db: Database, chat: Chat
) -> None:
    newest = await live_ids(db, chat.live)
    token = chat.ada.token
    await client.gql("{ viewer { id } }", token=token)
    spread = """query($id: ID!) { node(id: $id) { id ...Chat } }
      fragment Chat on LiveStream {
        title chatMessages(first: 2) { nodes { id stream { id title } } } }"""
    client.sql.clear()
    body = await client.gql(spread, {"id": chat.live_id}, token=token)
    assert len(client.sql.statements) == 1  # the messages' stream: the row read with them
    node = body["data"]["node"]
    assert node["title"] == "Ada live" and node["id"] == chat.live_id
    nodes = node["chatMessages"]["nodes"]
    assert [decode_id(n["id"])[1] for n in nodes] == newest[:2]
    assert [n["stream"] for n in nodes] == [{"id": chat.live_id, "title": "Ada live"}] * 2
    aliased = """query($id: ID!) { node(id: $id) { ... on LiveStream {
      a: chatMessages(first: 1) { nodes { id } } b: chatMessages(first: 3) { nodes { id } } } } }"""
    client.sql.clear()
    body = await client.gql(aliased, {"id": chat.live_id}, token=token)
    assert len(client.sql.statements) == 3  # the stream, then each page
    node = body["data"]["node"]
    assert [decode_id(n["id"])[1] for n in node["a"]["nodes"]] == newest[:1]
    assert [decode_id(n["id"])[1] for n in node["b"]["nodes"]] == newest[:3]


async def test_the_page_query_walks_the_partial_index_without_sorting(
    db: Database, chat: Chat
) -> None:
    users = [chat.ada.id, chat.bob.id, chat.vic.id]
    for stream in (chat.live, chat.bobs, chat.ended):
        await insert_messages(db, stream, users, 4000, deleted_every=10)
    await db.write(lambda conn: conn.execute(text("ANALYZE chat_messages")))
    newest = await live_ids(db, chat.live)
    keysets = [
        chat_queries.ChatKeyset(stream_id=chat.live, limit=50),
        chat_queries.ChatKeyset(stream_id=chat.live, limit=100, after=newest[2000]),
        chat_queries.ChatKeyset(stream_id=chat.live, limit=20, backward=True),
        chat_queries.ChatKeyset(stream_id=chat.live, limit=20, before=newest[3000], backward=True),
        chat_queries.ChatKeyset(
            stream_id=chat.live, limit=20, after=newest[10], before=newest[500]
        ),
    ]
    accesses = [
        Access(user_id=chat.admin.id, is_admin=True),
        Access(user_id=chat.ada.id, is_admin=False),
    ]

    async def plans(conn: AsyncConnection, generic: bool) -> list[dict[str, Any]]:
        mode = "force_generic_plan" if generic else "auto"
        await conn.exec_driver_sql(f"SET plan_cache_mode = {mode}")
        return [
            await _plan(conn, chat_queries.page_statement(a, k)) for a in accesses for k in keysets
        ]

    async def combined(conn: AsyncConnection, generic: bool) -> list[dict[str, Any]]:
        mode = "force_generic_plan" if generic else "auto"
        await conn.exec_driver_sql(f"SET plan_cache_mode = {mode}")
        return [
            await _plan(conn, chat_queries.stream_and_page_statement(a, k))
            for a in accesses
            for k in keysets
        ]

    for generic in (False, True):
        # With its stream (node's look-ahead): the same index scan under the LIMIT; the
        # sorts above it order the stream's row and the page's limit+1 rows.
        for plan in await db.read(lambda conn, g=generic: combined(conn, g)):
            limits = [n for n in _nodes(plan) if n["Node Type"] == "Limit"]
            assert len(limits) == 1, json.dumps(plan, indent=1)
            below = _nodes(limits[0])
            assert not any(n["Node Type"] == "Sort" for n in below), json.dumps(plan, indent=1)
            scans = [n for n in below if n.get("Relation Name") == "chat_messages"]
            assert [n.get("Index Name") for n in scans] == ["chat_messages_stream_live_idx"], plan
        for plan in await db.read(lambda conn, g=generic: plans(conn, g)):
            nodes = _nodes(plan)
            assert not any(n["Node Type"] == "Sort" for n in nodes), json.dumps(plan, indent=1)
            scans = [n for n in nodes if n.get("Relation Name") == "chat_messages"]
            assert [n.get("Index Name") for n in scans] == ["chat_messages_stream_live_idx"], plan
            assert scans[0]["Node Type"] in ("Index Scan", "Index Only Scan")


async def test_chat_page_statements_keep_their_generic_plan(db: Database, chat: Chat) -> None:
    """With the LIMIT written into the statement, PostgreSQL keeps each prepared page
    statement's generic plan after its first five runs instead of planning every run."""
    newest = await live_ids(db, chat.live)
    keysets = [
        chat_queries.ChatKeyset(stream_id=chat.live, limit=50),
        chat_queries.ChatKeyset(stream_id=chat.live, limit=20, after=newest[30]),
    ]
    accesses = [Access(user_id=chat.admin.id, is_admin=True), Access(chat.ada.id, False)]
    builders = [chat_queries.page_statement, chat_queries.stream_and_page_statement]
    for access in accesses:
        for keyset in keysets:
            for build in builders:
                statement, params = build(access, keyset)

                async def run(
                    conn: AsyncConnection, statement: Any = statement, params: Any = params
                ) -> Any:
                    for _ in range(8):
                        await direct_fetch(conn, statement, params)
                    sql = compile_statement(statement, conn.dialect).sql
                    found = await conn.execute(
                        text(
                            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                            "WHERE statement = :sql"
                        ),
                        {"sql": sql},
                    )
                    return found.one()

                generic, custom = await db.read(run)
                case = (build.__name__, access, keyset)
                assert generic >= 3 and custom <= 5, (case, generic, custom)


async def test_the_same_client_mutation_id_ten_times_concurrently_creates_one_message(
    client: Client, db: Database, chat: Chat
) -> None:
    variables = {"input": {"streamId": chat.live_id, "body": "  hello  ", "clientMutationId": "k1"}}
    bodies = await asyncio.gather(
        *(client.gql(SEND, variables, token=chat.ada.token) for _ in range(10))
    )
    assert all(b == bodies[0] for b in bodies), bodies
    payload = bodies[0]["data"]["sendChatMessage"]
    assert payload["errors"] == [] and payload["clientMutationId"] == "k1"
    assert payload["message"]["body"] == "hello"
    assert payload["message"]["author"] == {"username": "ada"}
    assert payload["message"]["stream"]["id"] == chat.live_id
    assert await row_count(db, "client_mutation_id = 'k1'") == 1
    # A later retry, even after the stream ended, still answers with the same message.
    await db.write(
        lambda conn: conn.execute(
            text(f"UPDATE live_streams SET status = 'ended' WHERE id = {chat.live}")
        )
    )
    assert await client.gql(SEND, variables, token=chat.ada.token) == bodies[0]
    # Another user's identical key is theirs: idempotency is per user.
    other = await client.gql(SEND, variables, token=chat.admin.token)
    assert other["data"]["sendChatMessage"]["errors"][0]["code"] == "STREAM_NOT_LIVE"


async def test_expected_send_failures_are_typed_payload_errors(
    client: Client, db: Database, chat: Chat
) -> None:
    before = await row_count(db)

    async def send(token: str, stream: str, body: str, key: str) -> dict[str, Any]:
        response = await client.gql(
            SEND,
            {"input": {"streamId": stream, "body": body, "clientMutationId": key}},
            token=token,
        )
        assert "errors" not in response, response
        payload: dict[str, Any] = response["data"]["sendChatMessage"]
        return payload

    cases = [
        (chat.ada.token, chat.live_id, "x" * 501, "BODY_TOO_LONG"),
        (chat.ada.token, chat.live_id, " " + "x" * 501, "BODY_TOO_LONG"),
        (chat.ada.token, chat.live_id, "", "BODY_EMPTY"),
        (chat.ada.token, chat.live_id, " \n\t ", "BODY_EMPTY"),
        (chat.ada.token, chat.live_id, "a\x00b", "BODY_INVALID"),
        (chat.ada.token, encode_id("LiveStream", chat.ended), "hi", "STREAM_NOT_LIVE"),
        (chat.ada.token, encode_id("LiveStream", 999_999), "hi", "STREAM_NOT_FOUND"),
        (chat.vic.token, chat.live_id, "hi", "STREAM_NOT_FOUND"),  # hidden = missing
        (chat.bob.token, chat.live_id, "hi", "STREAM_NOT_FOUND"),
    ]
    for n, (token, stream, body, code) in enumerate(cases):
        payload = await send(token, stream, body, f"bad-{n}")
        assert payload["message"] is None, (code, payload)
        assert [e["code"] for e in payload["errors"]] == [code], (code, payload)
        assert payload["errors"][0]["message"]
    assert await row_count(db) == before, "a failed send inserted a row"

    # Exactly 500 characters (after trimming) is fine; the same key with another body is not.
    ok = await send(chat.ada.token, chat.live_id, "  " + "y" * 500 + "  ", "edge")
    assert ok["errors"] == [] and ok["message"]["body"] == "y" * 500
    reused = await send(chat.ada.token, chat.live_id, "different", "edge")
    assert reused["message"] is None
    assert reused["errors"] == [
        {
            "code": "CLIENT_MUTATION_ID_REUSED",
            "message": reused["errors"][0]["message"],
            "field": "clientMutationId",
        }
    ]
    # The same key and body for another stream is a reuse too (admins see both streams).
    assert (await send(chat.admin.token, chat.live_id, "z", "adm"))["errors"] == []
    reused = await send(chat.admin.token, encode_id("LiveStream", chat.bobs), "z", "adm")
    assert [e["code"] for e in reused["errors"]] == ["CLIENT_MUTATION_ID_REUSED"]
    assert await row_count(db) == before + 2

    # Client mistakes are top-level errors.
    for variables, code in (
        ({"streamId": "garbage", "body": "hi", "clientMutationId": "c"}, "BAD_USER_INPUT"),
        (
            {"streamId": encode_id("Vod", 1), "body": "hi", "clientMutationId": "c"},
            "BAD_USER_INPUT",
        ),
        ({"streamId": chat.live_id, "body": "hi", "clientMutationId": ""}, "BAD_USER_INPUT"),
        ({"streamId": chat.live_id, "body": "hi", "clientMutationId": "c" * 129}, "BAD_USER_INPUT"),
        ({"streamId": chat.live_id, "body": "hi"}, "BAD_USER_INPUT"),
    ):
        body = await client.gql(SEND, {"input": variables}, token=chat.ada.token)
        assert error_codes(body) == [code], (variables, body)
    body = await client.gql(
        SEND, {"input": {"streamId": chat.live_id, "body": "hi", "clientMutationId": "anon"}}
    )
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert await row_count(db) == before + 2


async def test_a_message_deleted_after_sending_is_not_replayed(
    client: Client, db: Database, chat: Chat
) -> None:
    variables = {"input": {"streamId": chat.live_id, "body": "oops", "clientMutationId": "d1"}}
    sent = (await client.gql(SEND, variables, token=chat.ada.token))["data"]["sendChatMessage"]
    deleted = await client.gql(
        DELETE, {"input": {"id": sent["message"]["id"]}}, token=chat.ada.token
    )
    assert "errors" not in deleted
    again = (await client.gql(SEND, variables, token=chat.ada.token))["data"]["sendChatMessage"]
    assert again["message"] is None
    assert [e["code"] for e in again["errors"]] == ["MESSAGE_DELETED"]
    assert await row_count(db, "client_mutation_id = 'd1'") == 1


async def test_only_the_stream_owner_or_an_admin_may_delete_and_twice_is_harmless(
    client: Client, db: Database, chat: Chat
) -> None:
    newest = await live_ids(db, chat.live)
    first, second = (encode_id("ChatMessage", i) for i in newest[:2])
    for token in (chat.bob.token, chat.vic.token):
        body = await client.gql(DELETE, {"input": {"id": first}}, token=token)
        assert error_codes(body) == ["FORBIDDEN"] and body["data"] is None, body
    # A missing message answers exactly like one you may not delete.
    body = await client.gql(
        DELETE, {"input": {"id": encode_id("ChatMessage", 999_999)}}, token=chat.bob.token
    )
    assert error_codes(body) == ["FORBIDDEN"]
    assert (await fetch(client, chat.ada.token, chat.live_id, first=1))["nodes"][0]["id"] == first

    for token, gid in ((chat.ada.token, first), (chat.admin.token, second)):
        payloads = [
            await client.gql(DELETE, {"input": {"id": gid, "clientMutationId": "x"}}, token=token)
            for _ in range(2)
        ]
        assert (
            payloads[0]
            == payloads[1]
            == {"data": {"deleteChatMessage": {"deletedMessageId": gid, "clientMutationId": "x"}}}
        )
    deleted_by = await db.read(
        lambda conn: conn.execute(
            text(
                "SELECT id, deleted_by_id FROM chat_messages WHERE id = ANY(:ids) ORDER BY id DESC"
            ),
            {"ids": newest[:2]},
        )
    )
    assert [tuple(r) for r in deleted_by] == [(newest[0], chat.ada.id), (newest[1], chat.admin.id)]
    assert await walk(client, chat.ada.token, chat.live_id, backward=False, size=100) == newest[2:]
    body = await client.gql(
        "query($id: ID!) { node(id: $id) { id } }", {"id": first}, token=chat.admin.token
    )
    assert body == {"data": {"node": None}}
    body = await client.gql(DELETE, {"input": {"id": "nope"}}, token=chat.ada.token)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    body = await client.gql(DELETE, {"input": {"id": first}})
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_chat_follows_stream_visibility_in_every_path(
    client: Client, db: Database, chat: Chat
) -> None:
    newest = await live_ids(db, chat.live)
    message = encode_id("ChatMessage", newest[0])
    node = "query($id: ID!) { node(id: $id) { id ... on ChatMessage { body stream { id } } } }"
    for token in (chat.vic.token, chat.bob.token):
        assert await client.gql(PAGE, {"id": chat.live_id}, token=token) == {"data": {"node": None}}
        assert await client.gql(node, {"id": message}, token=token) == {"data": {"node": None}}
        body = await client.gql(
            "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": [message]}, token=token
        )
        assert body == {"data": {"nodes": [None]}}
    for token in (chat.ada.token, chat.admin.token):
        body = await client.gql(node, {"id": message}, token=token)
        assert body["data"]["node"]["id"] == message
        assert body["data"]["node"]["stream"] == {"id": chat.live_id}
    body = await client.gql(PAGE, {"id": chat.live_id})
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_bad_paging_arguments_are_bad_user_input(client: Client, chat: Chat) -> None:
    token = chat.ada.token
    page = await fetch(client, token, chat.live_id, first=3)
    cursor = page["pageInfo"]["endCursor"]
    other = await fetch(client, token, encode_id("LiveStream", chat.ended), first=1)
    vods = await client.gql("{ vods(first: 1) { pageInfo { endCursor } } }", token=token)
    tampered = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    cases: list[dict[str, Any]] = [
        {"first": 0},
        {"first": 101},
        {"last": 0},
        {"last": 101},
        {"first": 2, "last": 2},
        {"after": "garbage"},
        {"before": ""},
        {"after": tampered},
        {"after": "x" * 5000},
        {"after": other["pageInfo"]["endCursor"]},  # another stream's chat
    ]
    if vods["data"]["vods"]["pageInfo"]["endCursor"]:
        cases.append({"after": vods["data"]["vods"]["pageInfo"]["endCursor"]})
    for args in cases:
        body = await client.gql(PAGE, {"id": chat.live_id, **args}, token=token)
        assert error_codes(body) == ["BAD_USER_INPUT"], (args, body)
    assert len((await fetch(client, token, chat.live_id, first=100))["edges"]) == 100


# ---------------------------------------------------------------------------------------
# Subscriptions over graphql-transport-ws, against a real uvicorn on this event loop
# ---------------------------------------------------------------------------------------


@pytest.fixture
async def served(database_url: str) -> AsyncIterator[Any]:
    app = create_app(conftest.test_settings(database_url))
    async with serve(app) as server:
        yield server, app


async def http_send(base: str, token: str, stream: str, body: str, key: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            "/graphql",
            json={
                "query": SEND,
                "variables": {"input": {"streamId": stream, "body": body, "clientMutationId": key}},
            },
            headers={"Authorization": f"Bearer {token}"},
        )
    payload: dict[str, Any] = response.json()["data"]["sendChatMessage"]
    assert payload["errors"] == [], payload
    return payload


async def test_subscribers_receive_new_messages_loaded_fresh_for_each_event(
    served: Any, db: Database, chat: Chat
) -> None:
    server, app = served
    feed = app.state.services.chat_feed
    async with graphql_ws(ws_url(server), chat.ada.token) as ws:
        await ws.subscribe("1", SUBSCRIBE, {"streamId": chat.live_id})
        await eventually(lambda: feed.subscriber_count == 1, within=5.0)
        # Bob's stream is not Ada's subscription: only her stream's message arrives.
        await http_send(
            http_url(server), chat.bob.token, encode_id("LiveStream", chat.bobs), "no", "b1"
        )
        sent = await http_send(http_url(server), chat.admin.token, chat.live_id, "first!", "a1")
        event = await ws.receive()
        assert event == {
            "id": "1",
            "type": "next",
            "payload": {
                "data": {
                    "chatMessageAdded": {
                        "id": sent["message"]["id"],
                        "body": "first!",
                        "author": {"username": "root", "displayName": "Root"},
                        "stream": {"id": chat.live_id, "title": "Ada live"},
                    }
                }
            },
        }
        # The connection's context lives on, but every event reads rows afresh.
        await db.write(
            lambda conn: conn.execute(
                text(f"UPDATE users SET display_name = 'Renamed' WHERE id = {chat.admin.id}")
            )
        )
        await http_send(http_url(server), chat.admin.token, chat.live_id, "second", "a2")
        event = await ws.receive()
        assert event["payload"]["data"]["chatMessageAdded"]["author"]["displayName"] == "Renamed"
        await ws.complete("1")
        await eventually(lambda: feed.subscriber_count == 0, within=5.0)


async def test_subscribing_follows_stream_visibility(served: Any, chat: Chat) -> None:
    server, app = served
    feed = app.state.services.chat_feed
    cases = [
        (chat.vic.token, chat.live_id, "FORBIDDEN"),
        (chat.bob.token, chat.live_id, "FORBIDDEN"),
        (chat.ada.token, encode_id("LiveStream", 999_999), "FORBIDDEN"),
        (chat.ada.token, "garbage", "BAD_USER_INPUT"),
        (None, chat.live_id, "UNAUTHENTICATED"),
        ("rg_unknown", chat.live_id, "UNAUTHENTICATED"),
    ]
    for token, stream, code in cases:
        async with graphql_ws(ws_url(server), token) as ws:
            await ws.subscribe("s", SUBSCRIBE, {"streamId": stream})
            message = await ws.receive()
            assert message["type"] == "error", message
            assert [e["extensions"]["code"] for e in message["payload"]] == [code], message
    assert feed.subscriber_count == 0


async def test_subscriptions_end_on_disconnect_and_on_shutdown(
    database_url: str, chat: Chat
) -> None:
    app = create_app(conftest.test_settings(database_url))
    feed = None
    async with serve(app) as server:
        feed = app.state.services.chat_feed
        async with graphql_ws(ws_url(server), chat.ada.token) as first:
            await first.subscribe("a", SUBSCRIBE, {"streamId": chat.live_id})
            await first.subscribe("b", SUBSCRIBE, {"streamId": chat.live_id})
            await eventually(lambda: feed.subscriber_count == 2, within=5.0)
            await first.complete("a")
            await eventually(lambda: feed.subscriber_count == 1, within=5.0)
        await eventually(lambda: feed.subscriber_count == 0, within=5.0)  # the client went away

        second = graphql_ws(ws_url(server), chat.admin.token)
        ws = await second.__aenter__()
        await ws.subscribe("c", SUBSCRIBE, {"streamId": chat.live_id})
        await eventually(lambda: feed.subscriber_count == 1, within=5.0)
        server.should_exit = True  # graceful shutdown while a subscription is open
        closed = False
        try:
            while True:
                message = await ws.receive(within=10)
                assert message["type"] in ("complete", "next"), message
                if message["type"] == "complete":
                    break
        except Exception as exc:  # the server closes the socket (1012) instead
            closed = "ConnectionClosed" in type(exc).__name__
            assert closed, exc
        finally:
            await second.__aexit__(None, None, None)
    assert feed is not None and feed.subscriber_count == 0
    assert not feed.listener.listening
