"""The lane (schema/lane.py) answers exactly as Strawberry's path, or leaves the request
to it.

The same requests go to two apps over one seeded PostgreSQL, the lane on and off: status,
body and the headers a client reads must be equal byte for byte. The requests reach every
way out of the lane: answered, declined before anything ran (parse, validation, limits,
operation choice, mutation, subscription, transport options), refused by the rate limit
and failed inside a resolver.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.routing import Route

from db.engine import Database
from db.seed import SeedCounts, seed
from tests import conftest
from tests.conftest import Account, Client, make_account, running_app
from view import GraphQLApp

VOD_PAGE = (
    "query Page($n: Int = 3, $after: String) { vods(first: $n, after: $after) "
    "{ totalCount pageInfo { hasNextPage endCursor } nodes { id title owner { username } "
    "stream { title } } } }"
)
LIVE = (
    "{ liveStreams(first: 5, status: LIVE) { nodes { id title bitrateKbps viewerCount "
    "chatMessages(first: 2) { edges { cursor node { body author { username } } } } } } }"
)
TWO_OPERATIONS = "query A { viewer { username } } query B { viewer { id role } }"

MUTATION = (
    'mutation { sendChatMessage(input: {streamId: "x", body: "hi", clientMutationId: "m"}) '
    "{ message { id } errors { __typename } } }"
)
SUBSCRIPTION = 'subscription { liveStreamHealth(streamId: "x") { bitrateKbps } }'

# Each body and what the lane does with it: "ran" it, "declined" it (Strawberry's path
# answers), or was not asked (the view saw a body Strawberry refuses or treats apart).
REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"query": VOD_PAGE}, "ran"),
    ({"query": VOD_PAGE, "variables": {"n": 2}}, "ran"),
    ({"query": VOD_PAGE, "variables": {"n": 2}, "operationName": "Page"}, "ran"),
    ({"query": VOD_PAGE, "variables": {"n": 2}, "operationName": None}, "ran"),
    ({"query": LIVE}, "ran"),
    ({"query": "{ viewer { username role } }"}, "ran"),
    ({"query": TWO_OPERATIONS, "operationName": "B"}, "ran"),
    ({"query": '{ vods(first: 2, after: "not-a-cursor") { nodes { id } } }'}, "ran"),
    ({"query": VOD_PAGE, "variables": {"n": "three"}}, "ran"),  # BAD_USER_INPUT
    ({"query": TWO_OPERATIONS}, "declined"),  # no operation chosen
    ({"query": TWO_OPERATIONS, "operationName": "C"}, "declined"),
    ({"query": "{ vods(first: 2) { nodes { idd } } }"}, "declined"),  # validation
    ({"query": "{ vods(first: 2) { nodes { id } }"}, "declined"),  # parse
    ({"query": "{ " + "a: viewer { id } " * 40 + "}"}, "declined"),  # aliases limit
    ({"query": "{ vods(first: 100000) { nodes { id } } }"}, "declined"),  # cost limit
    ({"query": MUTATION}, "declined"),
    ({"query": SUBSCRIPTION}, "declined"),
    ({"query": VOD_PAGE, "extensions": {"persistedQuery": {}}}, "not asked"),
    ({"query": VOD_PAGE, "variables": [1]}, "not asked"),  # Strawberry's 400
    ({"query": VOD_PAGE, "operationName": 3}, "not asked"),
    ({"query": None}, "not asked"),
    ({"variables": {}}, "not asked"),
    ({"query": 7}, "not asked"),
]
HEADERS = ("content-type", "retry-after", "allow")


def graphql_app(client: Client) -> GraphQLApp:
    route = next(r for r in client.app.routes if isinstance(r, Route) and r.path == "/graphql")
    app = route.endpoint
    assert isinstance(app, GraphQLApp)
    return app


class LaneSpy:
    """Records whether the lane answered (a result) or declined (None) each request."""

    def __init__(self, app: GraphQLApp) -> None:
        assert app.lane is not None
        self.answered: list[bool] = []
        execute = app.lane.execute

        async def spy(*args: Any) -> Any:
            result = await execute(*args)
            self.answered.append(result is not None)
            return result

        app.lane.execute = spy  # type: ignore[method-assign, assignment]


async def answers(client: Client, token: str, bodies: list[dict[str, Any]]) -> list[str]:
    found = []
    headers = {"authorization": f"Bearer {token}"}
    for body in bodies:
        response = await client.http.post("/graphql", json=body, headers=headers)
        kept = {h: response.headers.get(h) for h in HEADERS}
        found.append(f"{response.status_code} {kept} {response.text}")
    return found


@pytest.fixture
async def accounts(db: Database) -> tuple[Account, Account]:
    await seed(db, SeedCounts(users=3, vods=30, streams=4, messages=40))
    return (
        await make_account(db, "lane_admin", "admin"),
        await make_account(db, "lane_creator", "creator"),
    )


async def test_lane_answers_as_strawberry_does(
    accounts: tuple[Account, Account], database_url: str
) -> None:
    bodies = [body for body, _ in REQUESTS]
    results: dict[bool, list[str]] = {}
    for lane in (False, True):
        settings = conftest.test_settings(
            database_url, fast_lane=lane, live_health_interval=3600, rate_limit_budget=10**9
        )
        async with running_app(settings) as client:
            spy = LaneSpy(graphql_app(client)) if lane else None
            found = []
            for account in accounts:
                found += await answers(client, account.token, bodies)
            # Twice: the second time every text is in the caches.
            found += await answers(client, accounts[1].token, bodies)
            results[lane] = found
            if spy is not None:
                asked = [fate == "ran" for _, fate in REQUESTS if fate != "not asked"]
                assert spy.answered == asked * 3
    assert results[True] == results[False]
    assert '"totalCount":' in results[True][0] and "errors" not in results[True][0]


async def test_lane_charges_the_rate_limit_once_per_request(
    db: Database, database_url: str
) -> None:
    creator = await make_account(db, "lane_creator", "creator")  # no rows needed
    query = {"query": "{ vods(first: 10) { nodes { id } } }"}  # cost 11
    results: dict[bool, list[str]] = {}
    for lane in (False, True):
        settings = conftest.test_settings(
            database_url, fast_lane=lane, rate_limit_budget=30, max_cost=20
        )
        async with running_app(settings) as client:
            results[lane] = await answers(client, creator.token, [query] * 4)
    assert results[True] == results[False]
    statuses = [r.split(" ", 1)[0] for r in results[True]]
    assert statuses == ["200", "200", "429", "429"]
    assert "RATE_LIMITED" in results[True][2] and "'retry-after': '" in results[True][2]
