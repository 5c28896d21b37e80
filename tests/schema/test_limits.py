"""Hostile queries are rejected before any resolver runs and before any SQL."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import get_introspection_query, parse

from db.engine import Database
from schema.limits import Limits, check, measure
from tests.conftest import Account, Client, error_codes, make_account


@pytest.fixture
async def admin(db: Database) -> Account:
    return await make_account(db, "root", "admin")


def deep_query(depth: int) -> str:
    nested = "id"
    for _ in range(depth - 3):
        nested = f"owner {{ id }} stream {{ vod {{ {nested} }} }}"
    return "{ vods(first: 1) { nodes { " + nested + " } } }"


async def rejected(client: Client, token: str, query: str, limit: str) -> dict[str, Any]:
    client.sql.clear()
    response = await client.post(query, token=token)
    assert response.status_code == 200
    body = response.json()
    assert error_codes(body) == ["QUERY_TOO_COMPLEX"], body
    extensions = body["errors"][0]["extensions"]
    assert extensions["limit"] == limit
    assert extensions["measured"] > extensions["maximum"]
    assert body.get("data") is None
    assert client.sql.statements == [], "a rejected query must not touch the database"
    return extensions


async def test_depth_50_is_rejected_without_sql(client: Client, admin: Account) -> None:
    query = deep_query(50)
    extensions = await rejected(client, admin.token, query, "depth")
    assert extensions["maximum"] == 12


async def test_sixteen_aliases_are_rejected(client: Client, admin: Account) -> None:
    fields = " ".join(f"a{i}: viewer {{ id }}" for i in range(16))
    extensions = await rejected(client, admin.token, "{ " + fields + " }", "aliases")
    assert extensions["measured"] == 16
    fifteen = " ".join(f"a{i}: viewer {{ id }}" for i in range(15))
    body = await client.gql("{ " + fifteen + " }", token=admin.token)
    assert "errors" not in body


async def test_two_thousand_tokens_are_rejected(client: Client, admin: Account) -> None:
    query = "{ viewer { " + " ".join(["id"] * 1998) + " } }"
    extensions = await rejected(client, admin.token, query, "tokens")
    assert extensions["measured"] >= 2000 and extensions["maximum"] == 1500


async def test_cost_multiplies_page_sizes_down_the_tree(client: Client, admin: Account) -> None:
    query = """query($n: Int) { vods(first: $n) { nodes { id } } a: vods(first: 100) {
      nodes { id } } b: vods(first: 100) { nodes { id } } }"""
    measured = measure(parse(query), None, {"n": 100})
    assert measured is not None and measured.cost == 3 + 300
    nested = "{ liveStreams(first: 100) { nodes { chatMessages(first: 100) { nodes { id } } } } }"
    measured = measure(parse(nested), None, {})
    assert measured is not None and measured.cost == 1 + 100 + 100 * 100
    assert [e.extensions["limit"] for e in check(measured, Limits())] == ["cost"]  # type: ignore[index]
    huge = "{ vods(first: 1000000) { nodes { id } } }"
    await rejected(client, admin.token, huge, "cost")
    variables = "query($n: Int) { vods(first: $n) { nodes { id } } }"
    client.sql.clear()
    body = (
        await client.http.post(
            "/graphql",
            json={"query": variables, "variables": {"n": 6000}},
            headers={"Authorization": f"Bearer {admin.token}"},
        )
    ).json()
    assert error_codes(body) == ["QUERY_TOO_COMPLEX"] and client.sql.statements == []


async def test_fragment_bombs_are_measured_without_expanding(
    client: Client, admin: Account
) -> None:
    fragments = ["fragment F0 on User { id username }"]
    for i in range(1, 40):
        fragments.append(f"fragment F{i} on User {{ ...F{i - 1} x{i}: id }}")
    query = "{ viewer { ...F39 } } " + " ".join(fragments)
    await rejected(client, admin.token, query, "aliases")


async def test_standard_introspection_passes(client: Client, admin: Account) -> None:
    for descriptions in (True, False):
        query = get_introspection_query(descriptions=descriptions, input_value_deprecation=True)
        body = await client.gql(query)
        assert "errors" not in body and body["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_suggestions_are_hidden(client: Client, admin: Account) -> None:
    body = await client.gql("{ vods { totalCont } }", token=admin.token)
    assert error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "Did you mean" not in body["errors"][0]["message"]
