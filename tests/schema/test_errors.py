"""Unexpected failures are masked, logged once with the request id the response carries."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from db.engine import Database
from tests.conftest import Client, make_account


async def test_unexpected_errors_are_masked_and_logged_with_the_request_id(
    client: Client, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    account = await make_account(db, "root", "admin")
    # A real fault: the schema drifted under the server (a column is gone).
    await db.write(lambda c: c.execute(text("ALTER TABLE videos RENAME COLUMN title TO name")))
    with caplog.at_level(logging.ERROR, logger="reelgraph.errors"):
        response = await client.post("{ vods(first: 2) { nodes { title } } }", token=account.token)
    assert response.status_code == 200
    body = response.json()
    [error] = body["errors"]
    assert error["message"] == "Internal server error."
    assert error["extensions"] == {
        "code": "INTERNAL_SERVER_ERROR",
        "requestId": response.headers["x-request-id"],
    }
    raw = response.text.lower()
    for leak in ("select", "undefined", "traceback", "videos", "asyncpg", "sqlalchemy", "42703"):
        assert leak not in raw
    [record] = [r for r in caplog.records if r.name == "reelgraph.errors"]
    assert record.request_id == response.headers["x-request-id"]  # type: ignore[attr-defined]
    assert record.exc_info is not None
