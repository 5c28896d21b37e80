"""The typed per-request context: who is asking, the database, and fresh DataLoaders."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from random import getrandbits
from typing import Any, Literal

from strawberry.dataloader import DataLoader

from cache import ShardedTTLCache
from db.chat_feed import ChatFeed
from db.engine import Database
from db.sql import Access
from db.users import hash_token, touch_token, user_for_token
from resolvers.errors import Unauthenticated
from resolvers.live import LiveHealth
from resolvers.pagination import CursorCodec


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None without a header."""
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    # A malformed header is a failed login, not an anonymous request.
    return token.strip() if scheme.lower() == "bearer" else ""


@dataclass(frozen=True, slots=True)
class Services:
    """What lives for the whole process and every request shares."""

    db: Database
    cursors: CursorCodec
    total_count_strategy: Literal["subquery", "window"] = "subquery"
    # The process's one LISTEN connection and chat subscribers (None: no subscriptions).
    chat_feed: ChatFeed | None = None
    # The bitrate/health cache and the liveStreamHealth tick (resolvers/live.py).
    live: LiveHealth = field(default_factory=LiveHealth.create)
    # Tokens authenticated in the last few seconds, by SHA-256 (None: every request asks
    # the database). Unknown tokens are never cached.
    tokens: ShardedTTLCache[bytes, Access] | None = None


def new_request_id() -> str:
    """32 hex digits, as `uuid4().hex` gave, from the process's generator (reseeded in a
    forked worker): no UUID object and no system call per request."""
    return f"{getrandbits(128):032x}"


@dataclass(eq=False)
class Context:
    services: Services
    token: str | None
    request_id: str = field(default_factory=new_request_id)
    # graphql-transport-ws: Strawberry stores the connection_init payload here.
    connection_params: dict[str, Any] | None = None
    client_address: str | None = None
    # The HTTP response being built (status and headers can be set on it), if any.
    response: Any = None
    _access: asyncio.Future[Access | None] | None = field(default=None, repr=False)
    _loaders: dict[str, DataLoader[Any, Any]] = field(default_factory=dict, repr=False)
    _digest: bytes | None = field(default=None, repr=False)

    @property
    def db(self) -> Database:
        return self.services.db

    def credentials(self) -> str | None:
        if self.token is not None or not isinstance(self.connection_params, dict):
            return self.token
        header = self.connection_params.get("Authorization") or self.connection_params.get(
            "authorization"
        )
        if isinstance(header, str):
            return bearer_token(header)
        raw = self.connection_params.get("token")
        return raw if isinstance(raw, str) else None

    def token_digest(self) -> bytes | None:
        """The SHA-256 of the credentials (None without any), computed once: the rate
        limit and the authentication both key on it."""
        if self._digest is None:
            token = self.credentials()
            if token is None:
                return None
            self._digest = hash_token(token)
        return self._digest

    async def viewer(self) -> Access | None:
        """The authenticated user, or None when anonymous. One lookup per request."""
        if self._access is None:
            key = self.token_digest()
            if key is None:
                return None
            tokens = self.services.tokens
            hit, cached = tokens.get(key) if tokens is not None else (False, None)
            if hit:  # no task and no trip through the event loop
                self._access = asyncio.get_running_loop().create_future()
                self._access.set_result(cached)
                return cached
            self._access = asyncio.ensure_future(self._authenticate(key))
        return await asyncio.shield(self._access)

    async def access(self) -> Access:
        access = await self.viewer()
        if access is None:
            raise Unauthenticated(
                "Authentication required: send `Authorization: Bearer <token>`."
                if self.credentials() is None
                else "The token is unknown or revoked."
            )
        return access

    async def _authenticate(self, key: bytes) -> Access | None:
        row = await self.db.read(lambda conn: user_for_token(conn, key))
        if row is None:
            return None
        if row.stale:
            await self.db.write(lambda conn: touch_token(conn, row.token_id))
        access = Access(user_id=row.id, is_admin=row.role == "admin")
        tokens = self.services.tokens
        if tokens is not None:
            tokens.set(key, access)
        return access

    def fresh_loaders(self) -> None:
        """Forget every DataLoader and its cache. A WebSocket context lives for the whole
        connection; a subscription calls this before each event so that no event sees
        rows cached for an earlier one."""
        self._loaders = {}

    def loader(self, name: str, factory: Any) -> DataLoader[Any, Any]:
        """The request's DataLoader called `name`, made on first use by `factory(self)`."""
        found = self._loaders.get(name)
        if found is None:
            found = self._loaders[name] = DataLoader(load_fn=factory(self))
        return found
