"""Query.vods as a Relay connection, against a real PostgreSQL."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import text

from db.engine import Database
from tests.conftest import Account, Client, error_codes, make_account
from tests.factories import insert_stream, insert_vods, vod_values

PAGE = """
query Page($first: Int, $after: String, $last: Int, $before: String,
           $filter: VodFilter, $orderBy: VodOrder) {
  vods(first: $first, after: $after, last: $last, before: $before,
       filter: $filter, orderBy: $orderBy) {
    totalCount
    edges { cursor node { id title } }
    nodes { id }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""

ORDERS = [
    (field, direction)
    for field in ("CREATED_AT", "TITLE", "DURATION")
    for direction in ("ASC", "DESC")
]
SQL_KEY = {"CREATED_AT": "created_at", "TITLE": "title", "DURATION": "duration_seconds"}


class Library:
    def __init__(self, admin: Account, ada: Account, bob: Account, viewer: Account) -> None:
        self.admin, self.ada, self.bob, self.viewer = admin, ada, bob, viewer


@pytest.fixture
async def library(db: Database) -> Library:
    """Two creators, an admin, a viewer; ties everywhere; deleted rows; a cross-owner VOD."""
    rng = random.Random(7)
    admin = await make_account(db, "root", "admin")
    ada = await make_account(db, "ada", "creator")
    bob = await make_account(db, "bob", "creator")
    viewer = await make_account(db, "vic", "viewer")
    rows = [vod_values(ada.id, rng) for _ in range(60)]
    rows += [vod_values(bob.id, rng) for _ in range(45)]
    rows += [vod_values(ada.id, rng, deleted_at=rng.choice(rows)["created_at"]) for _ in range(5)]
    await insert_vods(db, rows)
    # Bob's stream was recorded into a VOD that Ada owns: Bob sees it through his stream.
    [recorded] = await insert_vods(db, [vod_values(ada.id, rng, title="Bob's stream VOD")])
    await insert_stream(db, owner_id=bob.id, status="ended", vod_video_id=recorded)
    return Library(admin, ada, bob, viewer)


def _visible_sql(account: Account, *, admin: bool) -> str:
    if admin:
        return "deleted_at IS NULL"
    return (
        f"deleted_at IS NULL AND (owner_id = {account.id} OR id IN "
        f"(SELECT vod_video_id FROM live_streams WHERE owner_id = {account.id}))"
    )


async def expected_ids(
    db: Database, account: Account, *, admin: bool, field: str, direction: str, where: str = "true"
) -> list[int]:
    key = SQL_KEY[field]
    sql = (
        f"SELECT id FROM videos WHERE {_visible_sql(account, admin=admin)} AND {where} "
        f"ORDER BY {key} {direction}, id {direction}"
    )
    result = await db.read(lambda conn: conn.execute(text(sql)))
    return [int(r) for r in result.scalars()]


def ids_of(page: dict[str, Any]) -> list[int]:
    from resolvers.ids import decode_id

    return [decode_id(e["node"]["id"])[1] for e in page["edges"]]


async def walk(
    client: Client, token: str, *, backward: bool, size: int, **variables: Any
) -> list[int]:
    seen: list[int] = []
    cursor: str | None = None
    while True:
        if backward:
            args = {"last": size, "before": cursor}
        else:
            args = {"first": size, "after": cursor}
        body = await client.gql(PAGE, {**variables, **args}, token=token)
        assert "errors" not in body, body
        page = body["data"]["vods"]
        page_ids = ids_of(page)
        assert [n["id"] for n in page["nodes"]] == [e["node"]["id"] for e in page["edges"]]
        seen = page_ids + seen if backward else seen + page_ids
        info = page["pageInfo"]
        more = info["hasPreviousPage"] if backward else info["hasNextPage"]
        if page_ids:
            assert info["startCursor"] == page["edges"][0]["cursor"]
            assert info["endCursor"] == page["edges"][-1]["cursor"]
        if not more:
            return seen
        assert len(page_ids) == size
        cursor = info["startCursor"] if backward else info["endCursor"]


@pytest.mark.parametrize(("field", "direction"), ORDERS)
async def test_walking_every_page_both_ways_yields_each_visible_vod_once_in_order(
    client: Client, db: Database, library: Library, field: str, direction: str
) -> None:
    order = {"field": field, "direction": direction}
    for account, admin in ((library.admin, True), (library.ada, False), (library.bob, False)):
        expected = await expected_ids(db, account, admin=admin, field=field, direction=direction)
        assert expected
        forward = await walk(client, account.token, backward=False, size=7, orderBy=order)
        backward = await walk(client, account.token, backward=True, size=7, orderBy=order)
        assert forward == expected
        assert backward == expected


async def test_walk_stays_exact_while_rows_are_inserted(
    client: Client, db: Database, library: Library
) -> None:
    order = {"field": "CREATED_AT", "direction": "DESC"}
    before = await expected_ids(db, library.admin, admin=True, field="CREATED_AT", direction="DESC")
    rng = random.Random(11)
    seen: list[int] = []
    cursor = None
    while True:
        body = await client.gql(
            PAGE, {"first": 9, "after": cursor, "orderBy": order}, token=library.admin.token
        )
        page = body["data"]["vods"]
        seen += ids_of(page)
        await insert_vods(db, [vod_values(library.bob.id, rng) for _ in range(3)])
        if not page["pageInfo"]["hasNextPage"]:
            break
        cursor = page["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert set(before) <= set(seen), "a row that existed throughout was skipped"
    final = await expected_ids(db, library.admin, admin=True, field="CREATED_AT", direction="DESC")
    assert seen == [i for i in final if i in set(seen)], "pages are out of order"


FILTERS: list[tuple[dict[str, Any] | None, str]] = [
    (None, "true"),
    ({"status": "READY"}, "status = 'ready'"),
    ({"search": "ZELDA"}, "title ILIKE '%zelda%'"),
    ({"search": "50%"}, "strpos(title, '50%') > 0"),
    ({"search": "_"}, "strpos(title, '_') > 0"),
    ({"status": "FAILED", "search": "zel"}, "status = 'failed' AND title ILIKE '%zel%'"),
    ({"search": "no such title"}, "false"),
]


@pytest.mark.parametrize(("vod_filter", "where"), FILTERS)
async def test_total_count_equals_a_direct_count_for_every_filter_cursor_and_empty_page(
    client: Client, db: Database, library: Library, vod_filter: dict[str, Any] | None, where: str
) -> None:
    for account, admin in ((library.admin, True), (library.ada, False)):
        sql = f"SELECT count(*) FROM videos WHERE {_visible_sql(account, admin=admin)} AND {where}"
        direct = (await db.read(lambda conn, sql=sql: conn.execute(text(sql)))).scalar_one()
        cursor = None
        pages = 0
        while True:
            body = await client.gql(
                PAGE, {"first": 8, "after": cursor, "filter": vod_filter}, token=account.token
            )
            page = body["data"]["vods"]
            assert page["totalCount"] == direct
            pages += 1
            if not page["pageInfo"]["hasNextPage"]:
                break
            cursor = page["pageInfo"]["endCursor"]
        if cursor is not None:
            # Past the last row: an empty page still reports the total.
            last_cursor = page["pageInfo"]["endCursor"]
            body = await client.gql(
                PAGE, {"first": 5, "after": last_cursor, "filter": vod_filter}, token=account.token
            )
            empty = body["data"]["vods"]
            assert empty["edges"] == [] and empty["totalCount"] == direct
            assert empty["pageInfo"] == {
                "hasNextPage": False,
                "hasPreviousPage": True,
                "startCursor": None,
                "endCursor": None,
            }


async def test_total_count_is_only_computed_when_selected(client: Client, library: Library) -> None:
    client.sql.clear()
    await client.gql("{ vods(first: 3) { nodes { id } } }", token=library.admin.token)
    assert not any("count(" in s.lower() for s in client.sql.statements)
    client.sql.clear()
    await client.gql(
        "query { vods(first: 3) { ...Total } } fragment Total on VodConnection { totalCount }",
        token=library.admin.token,
    )
    counted = [s for s in client.sql.statements if "count(" in s.lower()]
    assert len(counted) == 1 and "FROM videos" in counted[0]
    # One statement: the page and its count travel together.
    assert sum("videos" in s for s in client.sql.statements) == 1


async def test_visibility_creators_see_their_own_admin_sees_all(
    client: Client, db: Database, library: Library
) -> None:
    admin_ids = set(await walk(client, library.admin.token, backward=False, size=100))
    ada_ids = set(await walk(client, library.ada.token, backward=False, size=100))
    bob_ids = set(await walk(client, library.bob.token, backward=False, size=100))
    owners = {
        int(r.id): int(r.owner_id)
        for r in await db.read(
            lambda conn: conn.execute(
                text("SELECT id, owner_id FROM videos WHERE deleted_at IS NULL")
            )
        )
    }
    assert admin_ids == set(owners)
    assert ada_ids == {i for i, o in owners.items() if o == library.ada.id}
    recorded = {i for i, o in owners.items() if o == library.ada.id} - {
        i for i in owners if i not in bob_ids
    }
    assert len(recorded) == 1, "Bob sees exactly the one VOD of Ada's recorded from his stream"
    assert bob_ids == {i for i, o in owners.items() if o == library.bob.id} | recorded
    assert await walk(client, library.viewer.token, backward=False, size=100) == []

    from resolvers.ids import encode_id

    bobs_only = sorted(i for i in bob_ids if owners[i] == library.bob.id)[:3]
    global_ids = [encode_id("Vod", i) for i in bobs_only]
    for gid in global_ids:
        body = await client.gql(
            "query($id: ID!) { node(id: $id) { id } }", {"id": gid}, token=library.ada.token
        )
        assert body == {"data": {"node": None}}
        body = await client.gql(
            "query($id: ID!) { node(id: $id) { id ... on Vod { title } } }",
            {"id": gid},
            token=library.admin.token,
        )
        assert body["data"]["node"]["id"] == gid
    body = await client.gql(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
        {"ids": global_ids},
        token=library.ada.token,
    )
    assert body == {"data": {"nodes": [None, None, None]}}
    body = await client.gql(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
        {"ids": global_ids},
        token=library.bob.token,
    )
    assert [n["id"] for n in body["data"]["nodes"]] == global_ids
    deleted = (
        await db.read(
            lambda conn: conn.execute(
                text("SELECT id FROM videos WHERE deleted_at IS NOT NULL LIMIT 1")
            )
        )
    ).scalar_one()
    body = await client.gql(
        "query($id: ID!) { node(id: $id) { id } }",
        {"id": encode_id("Vod", deleted)},
        token=library.admin.token,
    )
    assert body == {"data": {"node": None}}


async def test_stream_of_a_vod_follows_stream_visibility(client: Client, library: Library) -> None:
    query = (
        '{ vods(first: 100, filter: {search: "Bob\'s stream"}) {'
        " nodes { title owner { username } stream { title owner { username } } } } }"
    )
    bob = (await client.gql(query, token=library.bob.token))["data"]["vods"]["nodes"]
    assert bob == [
        {
            "title": "Bob's stream VOD",
            "owner": {"username": "ada"},
            "stream": {"title": "A stream", "owner": {"username": "bob"}},
        }
    ]
    ada = (await client.gql(query, token=library.ada.token))["data"]["vods"]["nodes"]
    assert ada == [{"title": "Bob's stream VOD", "owner": {"username": "ada"}, "stream": None}]


async def test_bad_paging_arguments_are_bad_user_input(client: Client, library: Library) -> None:
    token = library.admin.token
    first = await client.gql(PAGE, {"first": 3}, token=token)
    cursor = first["data"]["vods"]["pageInfo"]["endCursor"]
    tampered = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    import base64

    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    forged = base64.urlsafe_b64encode(raw.replace(b"created_at", b"title", 1)).decode()
    cases: list[dict[str, Any]] = [
        {"first": 0},
        {"first": 101},
        {"first": -1},
        {"last": 0},
        {"last": 101},
        {"first": 2, "last": 2},
        {"after": "garbage"},
        {"after": ""},
        {"before": "%%%"},
        {"after": tampered},
        {"after": forged},
        {"after": "x" * 5000},
        {"after": cursor, "orderBy": {"field": "TITLE", "direction": "DESC"}},
        {"after": cursor, "orderBy": {"field": "CREATED_AT", "direction": "ASC"}},
        {"filter": {"search": "x" * 201}},
    ]
    for variables in cases:
        response = await client.post(PAGE, variables, token=token)
        assert response.status_code == 200, variables
        body = response.json()
        assert body["data"] is None and error_codes(body) == ["BAD_USER_INPUT"], (variables, body)
    # Ints beyond 32 bits are rejected by GraphQL itself, still as a typed error.
    body = (await client.post(PAGE, {"first": 2**40}, token=token)).json()
    assert error_codes(body) == ["BAD_USER_INPUT"]
    body = (await client.post("{ vods(first: 10000000000) { totalCount } }", token=token)).json()
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_ids_unknown_are_null_malformed_are_bad_user_input(
    client: Client, library: Library
) -> None:
    from resolvers.ids import encode_id

    token = library.admin.token
    for gid in (
        encode_id("Vod", 999_999),
        encode_id("LiveStream", 424242),
        encode_id("User", 77777),
    ):
        body = await client.gql(
            "query($id: ID!) { node(id: $id) { id } }", {"id": gid}, token=token
        )
        assert body == {"data": {"node": None}}
    for gid in (
        "nope",
        "",
        encode_id("Vod", 0).rstrip("A") + "!",
        "Vm9kOi0x",
        "VGFibGU6MQ",
        "Vm9kOjFl",
    ):
        body = await client.gql(
            "query($id: ID!) { node(id: $id) { id } }", {"id": gid}, token=token
        )
        assert error_codes(body) == ["BAD_USER_INPUT"], (gid, body)
    body = await client.gql(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
        {"ids": [encode_id("Vod", 999_999), "bad"]},
        token=token,
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_anonymous_requests_get_unauthenticated_but_may_read_viewer(
    client: Client, library: Library
) -> None:
    assert await client.gql("{ viewer { id } }") == {"data": {"viewer": None}}
    body = await client.gql("{ vods { totalCount } }")
    assert error_codes(body) == ["UNAUTHENTICATED"]
    body = await client.gql("{ vods { totalCount } }", token="rg_not-a-token")
    assert error_codes(body) == ["UNAUTHENTICATED"]
    response = await client.http.post(
        "/graphql", json={"query": "{ viewer { id } }"}, headers={"Authorization": "Basic abc"}
    )
    assert response.json()["data"] == {"viewer": None}
    body = await client.gql("{ viewer { username role } }", token=library.ada.token)
    assert body == {"data": {"viewer": {"username": "ada", "role": "CREATOR"}}}


async def test_a_page_of_100_vods_with_owner_and_stream_costs_constant_statements(
    client: Client, db: Database, library: Library
) -> None:
    rng = random.Random(3)
    more = await insert_vods(db, [vod_values(library.bob.id, rng) for _ in range(120)])
    for vod_id in more[:30]:
        await insert_stream(db, owner_id=library.bob.id, status="ended", vod_video_id=vod_id)
    query = """query($n: Int!) { vods(first: $n) { totalCount nodes { id owner { username }
      stream { title owner { username } vod { id owner { username } } } } } }"""
    counts = {}
    await client.gql("{ viewer { id } }", token=library.admin.token)  # the token is cached
    for n in (1, 10, 100):
        client.sql.clear()
        body = await client.gql(query, {"n": n}, token=library.admin.token)
        assert len(body["data"]["vods"]["nodes"]) == n
        counts[n] = len(client.sql.statements)
    # Owner and stream come with the page (one statement); the streams' own owners and
    # VODs are one batch each. The newest VOD has no stream: its page is the one statement.
    assert counts[10] == counts[100] == 3, counts
    assert counts[1] == 1, counts
