"""Query.liveStreams, the live fields of LiveStream, and liveStreamHealth over a WebSocket."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app import create_app
from db.engine import Database
from resolvers.ids import decode_id, encode_id
from tests.clock import FakeClock
from tests.conftest import Account, Client, error_codes, make_account, running_app
from tests.conftest import test_settings as settings_for
from tests.factories import BASE_TIME, insert_stream
from tests.wsclient import graphql_ws, serve, ws_url

PAGE = """
query Page($first: Int, $after: String, $last: Int, $before: String,
           $status: LiveStreamStatus) {
  liveStreams(first: $first, after: $after, last: $last, before: $before, status: $status) {
    edges { cursor node { id } }
    nodes { id }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
LIVE_FIELDS = (
    "{ liveStreams(first: 100) { nodes { id bitrateKbps bitrateUpdatedAt viewerCount } } }"
)
STATUSES = ("idle", "live", "ending", "ended")


class Studio:
    def __init__(self, admin: Account, ada: Account, bob: Account, viewer: Account) -> None:
        self.admin, self.ada, self.bob, self.viewer = admin, ada, bob, viewer


@pytest.fixture
async def studio(db: Database) -> Studio:
    """Streams of two creators, with many created_at ties so the id tiebreak matters."""
    rng = random.Random(9)
    admin = await make_account(db, "root", "admin")
    ada = await make_account(db, "ada", "creator")
    bob = await make_account(db, "bob", "creator")
    viewer = await make_account(db, "vic", "viewer")
    for i in range(31):
        await insert_stream(
            db,
            owner_id=ada.id if i % 3 else bob.id,
            status=rng.choice(STATUSES),
            created_at=BASE_TIME + timedelta(minutes=rng.randrange(0, 8)),
            viewer_count_current=rng.randrange(0, 5000),
        )
    return Studio(admin, ada, bob, viewer)


async def expected_ids(db: Database, where: str) -> list[int]:
    result = await db.read(
        lambda conn: conn.execute(
            text(f"SELECT id FROM live_streams WHERE {where} ORDER BY created_at DESC, id DESC")
        )
    )
    return [int(i) for i in result.scalars()]


def _ids(page: dict[str, Any]) -> list[int]:
    return [decode_id(e["node"]["id"])[1] for e in page["edges"]]


async def walk(
    client: Client, token: str, *, backward: bool, size: int, status: str | None = None
) -> list[int]:
    seen: list[int] = []
    cursor: str | None = None
    while True:
        args = {"last": size, "before": cursor} if backward else {"first": size, "after": cursor}
        body = await client.gql(PAGE, {**args, "status": status}, token=token)
        assert "errors" not in body, body
        page = body["data"]["liveStreams"]
        ids = _ids(page)
        assert [n["id"] for n in page["nodes"]] == [e["node"]["id"] for e in page["edges"]]
        seen = ids + seen if backward else seen + ids
        info = page["pageInfo"]
        if ids:
            assert info["startCursor"] == page["edges"][0]["cursor"]
            assert info["endCursor"] == page["edges"][-1]["cursor"]
        assert info["hasNextPage" if backward else "hasPreviousPage"] == (cursor is not None)
        if not info["hasPreviousPage" if backward else "hasNextPage"]:
            return seen
        assert len(ids) == size
        cursor = info["startCursor"] if backward else info["endCursor"]


async def test_walking_pages_both_ways_yields_each_visible_stream_once_in_order(
    client: Client, db: Database, studio: Studio
) -> None:
    cases = [(studio.admin, "true"), (studio.ada, f"owner_id = {studio.ada.id}")]
    cases.append((studio.bob, f"owner_id = {studio.bob.id}"))
    for account, where in cases:
        expected = await expected_ids(db, where)
        assert len(expected) > 5
        for size in (1, 4, 100):
            assert await walk(client, account.token, backward=False, size=size) == expected
            assert await walk(client, account.token, backward=True, size=size) == expected
    # Default page size is 20.
    body = await client.gql("{ liveStreams { nodes { id } } }", token=studio.admin.token)
    assert len(body["data"]["liveStreams"]["nodes"]) == 20


@pytest.mark.parametrize("status", STATUSES)
async def test_status_filter(client: Client, db: Database, studio: Studio, status: str) -> None:
    for account, where in ((studio.admin, "true"), (studio.ada, f"owner_id = {studio.ada.id}")):
        expected = await expected_ids(db, f"{where} AND status = '{status}'")
        for backward in (False, True):
            got = await walk(
                client, account.token, backward=backward, size=3, status=status.upper()
            )
            assert got == expected


async def test_visibility_viewer_sees_none_anonymous_is_unauthenticated(
    client: Client, studio: Studio
) -> None:
    assert await walk(client, studio.viewer.token, backward=False, size=10) == []
    body = await client.gql(PAGE, {"first": 5})
    assert error_codes(body) == ["UNAUTHENTICATED"]
    # Hidden streams are null through node() too, and have no live fields to leak.
    ada_page = await client.gql(PAGE, {"first": 1}, token=studio.ada.token)
    [gid] = [n["id"] for n in ada_page["data"]["liveStreams"]["nodes"]]
    query = "query($id: ID!) { node(id: $id) { ... on LiveStream { bitrateKbps viewerCount } } }"
    body = await client.gql(query, {"id": gid}, token=studio.bob.token)
    assert body == {"data": {"node": None}}


async def test_bad_arguments_are_bad_user_input(client: Client, studio: Studio) -> None:
    token = studio.admin.token
    first = await client.gql(PAGE, {"first": 2}, token=token)
    cursor = first["data"]["liveStreams"]["pageInfo"]["endCursor"]
    tampered = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    forged = base64.urlsafe_b64encode(raw.replace(b"stream:", b"vod:", 1)).decode()
    cases: list[dict[str, Any]] = [
        {"first": 0},
        {"first": 101},
        {"last": 0},
        {"last": 101},
        {"first": -3},
        {"first": 2, "last": 2},
        {"after": "garbage"},
        {"before": ""},
        {"after": tampered},
        {"after": forged},
        {"before": "x" * 5000},
        {"status": "PAUSED"},
    ]
    for variables in cases:
        response = await client.post(PAGE, variables, token=token)
        assert response.status_code == 200, variables
        body = response.json()
        assert body["data"] is None and error_codes(body) == ["BAD_USER_INPUT"], (variables, body)
    body = await client.gql(
        "{ liveStreams(status: PAUSED) { nodes { id } } }", token=studio.admin.token
    )
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]


# ---------------------------------------------------------------------------------------
# bitrateKbps, bitrateUpdatedAt, viewerCount and the cache
# ---------------------------------------------------------------------------------------


async def add_segments(db: Database, stream_id: int, ages_and_sizes: list[tuple[int, int]]) -> None:
    """Segments received `age` seconds before the server's now()."""

    async def run(conn: AsyncConnection) -> None:
        for seq, (age, size) in enumerate(ages_and_sizes, start=1):
            await conn.execute(
                text(
                    "INSERT INTO live_stream_segments (stream_id, quality, sequence_number, "
                    "duration_ms, size_bytes, received_at) VALUES "
                    "(:s, '1080p', :n, 2000, :b, now() - make_interval(secs => :age))"
                ),
                {"s": stream_id, "n": seq, "b": size, "age": age},
            )

    await db.write(run)


async def direct(db: Database, stream_id: int) -> tuple[int | None, str | None]:
    """The formula, from the raw rows (ages are whole seconds, far from the 30 s edge)."""
    result = await db.read(
        lambda conn: conn.execute(
            text(
                "SELECT size_bytes, received_at FROM live_stream_segments "
                "WHERE stream_id = :s AND received_at > now() - interval '30 seconds'"
            ),
            {"s": stream_id},
        )
    )
    rows = list(result)
    if len(rows) < 2:
        return None, None
    newest = max(r.received_at for r in rows)
    span = (newest - min(r.received_at for r in rows)).total_seconds()
    if not span:
        return None, None
    return round(sum(r.size_bytes for r in rows) * 8 / span / 1000), newest.isoformat()


@pytest.fixture
async def streaming(db: Database) -> tuple[Account, dict[str, int]]:
    admin = await make_account(db, "root", "admin")
    layouts: dict[str, list[tuple[int, int]]] = {
        "none": [],
        "one": [(3, 1_000_000)],
        "same time": [(4, 1_000_000), (4, 1_000_000)],
        "two": [(6, 1_000_000), (2, 1_500_000)],
        "many": [(26 - 2 * i, 1_200_000 + 10_007 * i) for i in range(13)],
        "old ones": [(50, 9_000_000), (40, 9_000_000), (12, 800_000), (8, 900_000)],
    }
    streams = {}
    for viewers, (name, layout) in enumerate(layouts.items()):
        streams[name] = await insert_stream(
            db, owner_id=admin.id, status="live", viewer_count_current=viewers * 100
        )
        await add_segments(db, streams[name], layout)
    return admin, streams


def _estimator(statements: list[str]) -> list[str]:
    return [s for s in statements if "live_stream_segments" in s]


async def test_live_fields_match_a_direct_computation(
    client: Client, db: Database, streaming: tuple[Account, dict[str, int]]
) -> None:
    admin, streams = streaming
    body = await client.gql(LIVE_FIELDS, token=admin.token)
    assert "errors" not in body, body
    by_id = {decode_id(n["id"])[1]: n for n in body["data"]["liveStreams"]["nodes"]}
    for viewers, (name, stream) in enumerate(streams.items()):
        node = by_id[stream]
        kbps, newest = await direct(db, stream)
        assert node["bitrateKbps"] == kbps, name
        assert node["viewerCount"] == viewers * 100
        if newest is None:
            assert node["bitrateUpdatedAt"] is None, name
        else:
            assert node["bitrateUpdatedAt"] is not None
            assert node["bitrateUpdatedAt"][:19] == newest[:19], name
    assert by_id[streams["two"]]["bitrateKbps"] == 5000  # 2.5 MB * 8 / 4 s
    for name in ("none", "one", "same time"):
        assert by_id[streams[name]]["bitrateKbps"] is None
    # Six streams, one estimator statement.
    assert len(_estimator(client.sql.statements)) == 1


async def test_a_second_request_within_the_ttl_does_not_query_again(
    database_url: str, db: Database, streaming: tuple[Account, dict[str, int]]
) -> None:
    admin, streams = streaming
    clock = FakeClock(1000.0)
    async with running_app(settings_for(database_url), clock=clock) as client:
        first = await client.gql(LIVE_FIELDS, token=admin.token)
        assert len(_estimator(client.sql.statements)) == 1
        client.sql.clear()
        clock.advance(2.9)
        await add_segments(db, streams["none"], [(5, 1_000_000), (1, 1_000_000)])
        second = await client.gql(LIVE_FIELDS, token=admin.token)
        assert _estimator(client.sql.statements) == []
        assert second == first, "served from the cache, nulls included"
        clock.advance(0.1)  # the TTL (3 s) has passed
        third = await client.gql(LIVE_FIELDS, token=admin.token)
        assert len(_estimator(client.sql.statements)) == 1
        fresh = {n["id"]: n["bitrateKbps"] for n in third["data"]["liveStreams"]["nodes"]}
        assert fresh[encode_id("LiveStream", streams["none"])] == 4000
        stats = client.app.state.services.live.cache.stats()
        assert (stats.loads, stats.size, stats.load_errors) == (12, 6, 0)


async def test_ingest_runs_with_the_app_and_stops_on_shutdown(
    database_url: str, db: Database
) -> None:
    owner = await make_account(db, "ada", "creator")
    stream = await insert_stream(db, owner_id=owner.id, status="live")
    ticked = asyncio.Event()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        ticked.set()
        await asyncio.Event().wait()  # parked until the lifespan cancels it

    settings = settings_for(database_url, live_ingest=True)
    async with running_app(settings, sleep=sleep) as client:
        await asyncio.wait_for(ticked.wait(), timeout=30)
        body = await client.gql(LIVE_FIELDS, token=owner.token)
        assert [n["id"] for n in body["data"]["liveStreams"]["nodes"]] == [
            encode_id("LiveStream", stream)
        ]
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == "live-ingest"]
        assert len(tasks) == 1
    assert tasks[0].cancelled()
    assert slept == [2.0]
    count = await db.read(
        lambda conn: conn.scalar(text("SELECT count(*) FROM live_stream_segments"))
    )
    assert count == 2


# ---------------------------------------------------------------------------------------
# liveStreamHealth over a real WebSocket (graphql-transport-ws)
# ---------------------------------------------------------------------------------------

SUBSCRIBE = (
    "subscription($id: ID!) { liveStreamHealth(streamId: $id) { bitrateKbps viewerCount at } }"
)


async def _session(server: Any, token: str, stream_gid: str, *, ticks: int) -> list[dict[str, Any]]:
    """Connect, subscribe, read `ticks` events (or up to the first error), complete."""
    received: list[dict[str, Any]] = []
    async with graphql_ws(ws_url(server), token) as ws:
        await ws.subscribe("1", SUBSCRIBE, {"id": stream_gid})
        while len(received) < ticks:
            message = await asyncio.wait_for(ws.receive(), 10)
            received.append(message)
            if message["type"] != "next" or "errors" in message["payload"]:
                break
        await ws.complete("1")
    return received


@pytest.fixture
async def ws_server(
    database_url: str, streaming: tuple[Account, dict[str, int]]
) -> AsyncIterator[tuple[Any, list[float]]]:
    """A real uvicorn; the health ticks' sleep is injected so the test needn't wait 2 s."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0.01)

    async with serve(create_app(settings_for(database_url), sleep=sleep)) as server:
        yield server, slept


async def test_health_subscription_over_a_websocket(
    ws_server: tuple[Any, list[float]], streaming: tuple[Account, dict[str, int]]
) -> None:
    server, slept = ws_server
    admin, streams = streaming
    gid = encode_id("LiveStream", streams["two"])
    messages = await _session(server, admin.token, gid, ticks=3)
    assert [m["type"] for m in messages] == ["next"] * 3
    for message in messages:
        health = message["payload"]["data"]["liveStreamHealth"]
        assert health["bitrateKbps"] == 5000 and health["viewerCount"] == 300
        assert health["at"]
    assert slept[:2] == [2.0, 2.0], "ticks wait for the configured interval"


async def test_health_subscription_refuses_a_stream_the_viewer_cannot_see(
    ws_server: tuple[Any, list[float]], db: Database, streaming: tuple[Account, dict[str, int]]
) -> None:
    server, _ = ws_server
    _, streams = streaming
    creator = await make_account(db, "eve", "creator")
    viewer = await make_account(db, "vic", "viewer")
    hidden = encode_id("LiveStream", streams["two"])
    missing = encode_id("LiveStream", 987_654)
    for account, gid in ((creator, hidden), (viewer, hidden), (viewer, missing)):
        # An execution error: one `next` with errors and no data (graphql-transport-ws).
        [message] = await _session(server, account.token, gid, ticks=3)
        assert message["type"] == "next" and message["payload"]["data"] is None, message
        [error] = message["payload"]["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["message"] == "No live stream with this ID."
    for malformed in ("nope", encode_id("Vod", streams["two"])):
        [message] = await _session(server, creator.token, malformed, ticks=3)
        assert [e["extensions"]["code"] for e in message["payload"]["errors"]] == ["BAD_USER_INPUT"]
    [message] = await _session(server, "rg_unknown", hidden, ticks=3)
    assert [e["extensions"]["code"] for e in message["payload"]["errors"]] == ["UNAUTHENTICATED"]
