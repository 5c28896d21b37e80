"""/metrics: a known sequence of requests moves each series by exactly that much."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from db.engine import Database
from metrics import Metrics, operation_name, outcome_of
from resolvers.ids import encode_id
from tests import conftest
from tests.conftest import make_account
from tests.db.admin import eventually
from tests.factories import insert_stream
from tests.wsclient import graphql_ws, http_url, serve, ws_url

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

DURATION = "reelgraph_graphql_request_duration_seconds_count"
ERRORS = "reelgraph_graphql_errors_total"
SUBSCRIBE = """
subscription Added($streamId: ID!) { chatMessageAdded(streamId: $streamId) { id } }
"""


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        key(sample.name, **sample.labels): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def nothing() -> None:
    return None


def counter_deltas(before: Samples, after: Samples) -> dict[Any, float]:
    """Every counter (and histogram count) that moved, with how much."""
    moved = {}
    for name_labels, value in after.items():
        name = name_labels[0]
        if name.endswith(("_total", "_count")) and value != before.get(name_labels, 0.0):
            moved[name_labels] = value - before.get(name_labels, 0.0)
    return moved


async def test_a_known_sequence_moves_each_counter_by_exactly_that_much(
    database_url: str, db: Database
) -> None:
    # Budget 20 per client, no refill (the clock stands still), cost limit 20.
    settings = conftest.test_settings(database_url, max_cost=20, rate_limit_budget=20, pool_size=3)
    app = create_app(settings, clock=lambda: 1000.0)
    ada = await make_account(db, "ada", "creator")
    stream = await insert_stream(db, owner_id=ada.id, status="live")
    async with serve(app) as server, httpx.AsyncClient(base_url=http_url(server)) as http:

        async def post(query: str, headers: dict[str, str] | None = None) -> httpx.Response:
            return await http.post("/graphql", json={"query": query}, headers=headers or {})

        before = await scrape(http)
        for _ in range(3):  # anonymous client: 1 point each
            assert (await post("query Viewer { viewer { id } }")).json() == {
                "data": {"viewer": None}
            }
        for _ in range(2):  # refused by validation, never charged
            invalid = (await post("query Broken { nope }")).json()
            assert invalid["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        unknown = await http.post(
            "/graphql", json={"query": "query Known { __typename }", "operationName": "Nope"}
        )
        assert unknown.status_code == 400  # no operation to run: refused before executing
        assert unknown.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        burst = await post("query Burst { vods(first: 18) { totalCount } }")  # 19 > 17 left
        assert burst.status_code == 429
        cache = app.state.services.live.cache  # read through its stats() at scrape time
        for _ in range(2):  # a miss (one load), then a hit
            assert await cache.get_or_load(-1, nothing) is None
        stats = app.state.services.db.stats  # kept by the database layer, read at scrape time
        stats.retries += 2
        stats.timeouts += 1
        stats.unavailable += 1

        feed = app.state.services.chat_feed
        async with graphql_ws(ws_url(server), ada.token) as ws:
            await ws.subscribe("1", SUBSCRIBE, {"streamId": encode_id("LiveStream", stream)})

            def subscribed() -> bool:
                return bool(feed.subscriber_count == 1)

            await eventually(subscribed, within=5.0)
            during = await scrape(http)
            await ws.complete("1")

            async def closed() -> bool:
                now = await scrape(http)
                return now[key("reelgraph_graphql_websocket_operations")] == 0

            await eventually(closed, within=5.0)
            await ws.subscribe("2", SUBSCRIBE, {"streamId": "not-an-id"})
            refused = await ws.receive()
            assert refused["type"] == "error", refused
            assert refused["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
            await eventually(closed, within=5.0)
        after = await scrape(http)

    assert counter_deltas(before, during) == {
        key(DURATION, operation="Viewer", outcome="ok"): 3,
        key(DURATION, operation="Broken", outcome="invalid"): 2,
        key(DURATION, operation="Nope", outcome="invalid"): 1,
        key(DURATION, operation="Burst", outcome="rejected"): 1,
        key(ERRORS, code="GRAPHQL_VALIDATION_FAILED"): 3,
        key(ERRORS, code="RATE_LIMITED"): 1,
        key("reelgraph_rate_limit_rejections_total"): 1,
        key("reelgraph_cache_misses_total", cache="live_health"): 1,
        key("reelgraph_cache_loads_total", cache="live_health"): 1,
        key("reelgraph_cache_hits_total", cache="live_health"): 1,
        key("reelgraph_db_retries_total"): 2,
        key("reelgraph_db_timeouts_total"): 1,
        key("reelgraph_db_unavailable_total"): 1,
    }
    # Over WebSocket, errors are counted; subscriptions are not latency samples.
    assert counter_deltas(during, after) == {key(ERRORS, code="BAD_USER_INPUT"): 1}
    gauges = {
        "reelgraph_graphql_websocket_operations": (0, 1, 0),
        "reelgraph_chat_subscribers": (0, 1, 0),
        "reelgraph_cache_entries": (0, 1, 1),
    }
    for name, expected in gauges.items():
        labels = {"cache": "live_health"} if name.startswith("reelgraph_cache") else {}
        found = tuple(s[key(name, **labels)] for s in (before, during, after))
        assert found == expected, name
    assert after[key("reelgraph_db_pool_size")] == 3
    assert after[key("reelgraph_db_pool_connections", state="in_use")] == 0
    assert after[key("reelgraph_db_pool_connections", state="idle")] >= 1
    assert after[key("reelgraph_db_pool_overflow")] == 0


async def test_each_app_has_its_own_registry(database_url: str) -> None:
    settings = conftest.test_settings(database_url)
    async with (
        conftest.running_app(settings) as first,
        conftest.running_app(settings) as second,
    ):
        await first.post("query Once { __typename }")
        one, other = await scrape(first.http), await scrape(second.http)
    assert one[key(DURATION, operation="Once", outcome="ok")] == 1
    assert key(DURATION, operation="Once", outcome="ok") not in other


def test_operation_labels_are_bounded() -> None:
    metrics = Metrics(max_operations=2)
    for name in ("A", "B", "C", "A", "anonymous", "other"):
        metrics.observe(name, "ok", 0.01)
    labels = {
        s.labels["operation"]: s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == DURATION
    }
    assert labels == {"A": 2, "B": 1, "other": 2, "anonymous": 1}


@pytest.mark.parametrize(
    ("provided", "query", "expected"),
    [
        (None, "{ viewer { id } }", "anonymous"),
        (None, "query { viewer { id } }", "anonymous"),
        (None, "query($a: Int) { viewer { id } }", "anonymous"),
        (None, "  # comment\n query Named { viewer { id } }", "Named"),
        (None, "mutation Send($i: SendChatMessageInput!) { x }", "Send"),
        (None, "fragment F on Query { viewer { id } } query Later { ...F }", "Later"),
        (None, "fragment F on Query { viewer { id } }\n{ ...F }", "anonymous"),
        (None, "not graphql at all {{{", "anonymous"),
        (None, None, "anonymous"),
        ("Chosen", "query Other { viewer { id } }", "Chosen"),
        ("", "query Named { viewer { id } }", "Named"),
        ("has space", "{ viewer { id } }", "other"),
        ("x" * 129, "{ viewer { id } }", "other"),
        (42, "{ viewer { id } }", "anonymous"),
    ],
)
def test_operation_name(provided: object, query: object, expected: str) -> None:
    assert operation_name(provided, query) == expected


def test_outcome() -> None:
    assert outcome_of([]) == "ok"
    assert outcome_of(["GRAPHQL_PARSE_FAILED"]) == "invalid"
    assert outcome_of(["RATE_LIMITED"]) == "rejected"
    assert outcome_of(["QUERY_TOO_COMPLEX", "GRAPHQL_VALIDATION_FAILED"]) == "rejected"
    assert outcome_of(["UNAUTHENTICATED"]) == "error"
    assert outcome_of(["BAD_USER_INPUT", "DATABASE_TIMEOUT"]) == "error"
