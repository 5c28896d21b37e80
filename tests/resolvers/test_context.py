"""Authentication per request, and the short-lived cache of authenticated tokens."""

from __future__ import annotations

from sqlalchemy import text

from db.engine import Database
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
