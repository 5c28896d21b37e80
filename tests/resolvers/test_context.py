"""Authentication per request, and the short-lived cache of authenticated tokens."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text

import resolvers.context as context_module
from db.engine import Database
from resolvers.context import Context, Services, new_request_id
from resolvers.pagination import CursorCodec
from schema.guard import client_key
from tests.clock import FakeClock
from tests.conftest import error_codes, make_account, running_app
from tests.conftest import test_settings as settings_for

LIST = "{ vods(first: 1) { totalCount } }"


async def revoke_all(db: Database) -> None:
    await db.write(lambda conn: conn.execute(text("UPDATE api_tokens SET revoked_at = now()")))


async def test_a_token_is_looked_up_once_per_ttl_and_revocation_lands_within_it(
    database_url: str, db: Database
) -> None:
    account = await make_account(db, "ada", "creator")
    clock = FakeClock(1000.0)
    async with running_app(settings_for(database_url, auth_cache_ttl=2.0), clock=clock) as client:
        assert error_codes(await client.gql(LIST, token=account.token)) == []
        client.sql.clear()
        assert error_codes(await client.gql(LIST, token=account.token)) == []
        assert not any("api_tokens" in s for s in client.sql.statements)  # served from cache

        await revoke_all(db)
        clock.advance(1.9)
        assert error_codes(await client.gql(LIST, token=account.token)) == []  # still cached
        clock.advance(0.2)
        assert error_codes(await client.gql(LIST, token=account.token)) == ["UNAUTHENTICATED"]
        # An unknown token is never cached: it is looked up every time.
        client.sql.clear()
        for _ in range(2):
            assert error_codes(await client.gql(LIST, token=account.token)) == ["UNAUTHENTICATED"]
        assert sum("api_tokens" in s for s in client.sql.statements) == 2


async def test_with_the_cache_off_a_revoked_token_fails_at_once(
    database_url: str, db: Database
) -> None:
    account = await make_account(db, "ada", "creator")
    async with running_app(settings_for(database_url, auth_cache_ttl=0)) as client:
        assert error_codes(await client.gql(LIST, token=account.token)) == []
        await revoke_all(db)
        assert error_codes(await client.gql(LIST, token=account.token)) == ["UNAUTHENTICATED"]


def test_the_token_is_hashed_once_for_the_rate_limit_and_the_login(
    monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    hashed: list[str] = []

    def counted(token: str) -> bytes:
        hashed.append(token)
        return hashlib.sha256(token.encode()).digest()

    monkeypatch.setattr(context_module, "hash_token", counted)
    services = Services(db=db, cursors=CursorCodec(b"k" * 32))
    ctx = Context(services=services, token="rg_secret")
    # The rate limit's bucket key is what it was: the first 32 hex digits of the SHA-256.
    assert client_key(ctx) == "t:" + hashlib.sha256(b"rg_secret").hexdigest()[:32]
    assert ctx.token_digest() == hashlib.sha256(b"rg_secret").digest()
    assert client_key(ctx) == client_key(ctx)
    assert hashed == ["rg_secret"]
    # No credentials: the client's address; a malformed header ("") is not anonymous.
    assert client_key(Context(services=services, token=None, client_address="10.0.0.1")) == (
        "a:10.0.0.1"
    )
    assert Context(services=services, token=None).token_digest() is None
    assert Context(services=services, token="").token_digest() == hashlib.sha256(b"").digest()


def test_request_ids_are_32_hex_digits_and_distinct() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
