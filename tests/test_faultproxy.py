from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest
from sqlalchemy.engine import make_url

from db.errors import Category, classify
from tests.faultproxy import FaultProxy

if TYPE_CHECKING:  # imported at run time, pytest would try to collect the class
    from tests.pg import TestServer


@dataclass(frozen=True)
class Proxied:
    proxy: FaultProxy
    dsn: str  # for asyncpg.connect, reaching the test server through the proxy

    async def connect(self) -> asyncpg.Connection:
        # command_timeout also bounds asyncpg's CancelRequest after a client-side timeout.
        return await asyncpg.connect(self.dsn, timeout=2, command_timeout=1)


@pytest.fixture
async def proxied(pg_server: TestServer) -> AsyncIterator[Proxied]:
    async with FaultProxy.for_database(pg_server.url) as proxy:
        url = make_url(proxy.database_url(pg_server.url)).set(drivername="postgresql")
        yield Proxied(proxy, url.render_as_string(hide_password=False))


async def test_pass_through(proxied: Proxied) -> None:
    conn = await proxied.connect()
    try:
        assert await conn.fetchval("SELECT 40 + $1::int", 2) == 42
        assert proxied.proxy.connections == 1
    finally:
        await conn.close()


async def test_latency_delays_each_direction(proxied: Proxied) -> None:
    conn = await proxied.connect()
    try:
        await proxied.proxy.set_latency(0.1)
        started = time.monotonic()
        assert await conn.fetchval("SELECT 1") == 1
        slow = time.monotonic() - started

        await proxied.proxy.pass_through()
        started = time.monotonic()
        await conn.fetchval("SELECT 1")
        fast = time.monotonic() - started
    finally:
        await conn.close()

    assert slow >= 0.2  # the request and the response each waited 0.1 s
    assert fast < 0.1


async def test_blackhole_hangs_until_the_client_times_out(proxied: Proxied) -> None:
    conn = await proxied.connect()
    try:
        await proxied.proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await conn.fetchval("SELECT 1", timeout=0.3)
        assert time.monotonic() - started >= 0.3
        assert proxied.proxy.connections >= 1  # the connection is kept, only silent
    finally:
        conn.terminate()


async def test_blackhole_applies_to_new_connections(proxied: Proxied) -> None:
    await proxied.proxy.blackhole()
    with pytest.raises(TimeoutError):
        await asyncpg.connect(proxied.dsn, timeout=0.3)


async def test_reset_fails_an_in_flight_query(proxied: Proxied) -> None:
    conn = await proxied.connect()
    try:
        query = asyncio.create_task(conn.fetchval("SELECT pg_sleep(2)", timeout=5))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        assert await proxied.proxy.reset_all() == 1

        with pytest.raises(asyncpg.ConnectionDoesNotExistError) as info:
            await query
        assert time.monotonic() - started < 0.5
        assert isinstance(info.value.__cause__, ConnectionResetError)
        assert classify(info.value, readonly=True).category is Category.CONNECTION_LOST
    finally:
        conn.terminate()


async def test_refuse_makes_connect_fail_fast(proxied: Proxied) -> None:
    open_before = await proxied.connect()
    try:
        await proxied.proxy.refuse()
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError) as info:
            await asyncpg.connect(proxied.dsn, timeout=2)
        assert time.monotonic() - started < 0.5
        assert classify(info.value, readonly=False).category is Category.TRANSIENT

        assert await open_before.fetchval("SELECT 1") == 1  # open connections carry on

        await proxied.proxy.pass_through()
        again = await proxied.connect()
        assert await again.fetchval("SELECT 1") == 1
        await again.close()
    finally:
        await open_before.close()
