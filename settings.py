"""The one Settings object, read from the environment at the edge and passed down."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

_ORIGIN = re.compile(r"https?://[^/\s?#]+")


class SettingsError(ValueError):
    """An environment variable holds a value the server cannot use."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    # None: run an embedded PostgreSQL (pgserver) in data_dir.
    database_url: str | None = None
    data_dir: Path = Path(".reelgraph-data")
    host: str = "127.0.0.1"
    port: int = 8000
    debug: bool = False
    # Connections stay open: an overflow connection is closed on every return, and under
    # load reopening them cost more CPU than the queries (218 sessions in 10 s at c16).
    pool_size: int = 20
    pool_max_overflow: int = 0
    pool_timeout: float = 10.0
    # The retrying execution layer (db/retry.py).
    db_max_retries: int = 5
    db_retry_base: float = 0.1
    db_retry_cap: float = 2.0
    db_attempt_timeout: float = 30.0
    db_deadline: float = 60.0
    # Opening a connection, and pinging a pooled one at checkout.
    db_connect_timeout: float = 5.0
    # A pooled connection idle this long (or about to write) is pinged at checkout.
    db_ping_idle: float = 1.0
    db_lock_timeout: float = 10.0
    db_idle_in_transaction_timeout: float = 60.0
    db_slow_query: float = 1.0
    # "subquery" or "window": how VodConnection.totalCount is computed.
    total_count_strategy: str = "subquery"
    # Query limits, checked before any resolver runs (schema/limits.py).
    max_depth: int = 12
    max_aliases: int = 15
    max_tokens: int = 1500
    max_cost: int = 5000
    # Per client (token, or address when anonymous): cost points per period (seconds).
    rate_limit_budget: int = 50_000
    rate_limit_period: float = 60.0
    # A token authenticated within this many seconds is not looked up again (0: always);
    # a revoked token keeps working that long on each instance that saw it.
    auth_cache_ttl: float = 2.0
    auth_cache_max_entries: int = 10_000
    max_body_bytes: int = 1_048_576
    graphql_cache_size: int = 512
    # Complete objects from plans compiled once per query text (schema/plan.py); off:
    # graphql-core completes every field itself (same results, more CPU).
    execution_plans: bool = True
    # Run a plain query without Strawberry's per-request machinery (schema/lane.py);
    # off: every operation takes Strawberry's path (same answers, more CPU).
    fast_lane: bool = True
    # Live stream health (resolvers/live.py, db/ingest.py).
    bitrate_cache_ttl: float = 3.0
    bitrate_cache_max_entries: int = 1000
    bitrate_cache_shards: int = 16
    live_health_interval: float = 2.0
    # Simulate ingest into every live stream while serving (`serve --demo` turns it on).
    live_ingest: bool = False
    # GraphiQL's assets come from <graphiql_dir>/node_modules (`reelgraph build-graphiql`);
    # when they are missing the page loads them from the CDN.
    graphiql_dir: Path = Path(__file__).resolve().parent / "graphiql"
    # On SIGTERM: how long in-flight HTTP requests may run before they are cancelled.
    shutdown_timeout: int = 10
    # Log lines: "json", "text", or "auto" (text on a terminal, JSON otherwise).
    log_format: str = "auto"
    # uvicorn's line per HTTP request, beside our line per operation (about 20 µs each).
    access_log: bool = False
    # Browser origins allowed to call the API (CORS), e.g. the studio's; empty: none.
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("DATABASE_URL"):
            values["database_url"] = env["DATABASE_URL"]
        for f in fields(cls):
            if f.name == "database_url":
                continue
            raw = env.get("REELGRAPH_" + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, cls.__dataclass_fields__[f.name].default)
        settings = cls(**values)
        settings.validate()
        return settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def validate(self) -> None:
        if self.total_count_strategy not in ("subquery", "window"):
            raise SettingsError("REELGRAPH_TOTAL_COUNT_STRATEGY must be 'subquery' or 'window'")
        for name in (
            "db_attempt_timeout",
            "db_retry_base",
            "db_retry_cap",
            "db_deadline",
            "db_connect_timeout",
            "bitrate_cache_ttl",
            "bitrate_cache_max_entries",
            "bitrate_cache_shards",
            "live_health_interval",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"REELGRAPH_{name.upper()} must be positive")
        if self.auth_cache_ttl < 0 or self.auth_cache_max_entries < 1:
            raise SettingsError(
                "REELGRAPH_AUTH_CACHE_TTL must be 0 (off) or more, "
                "REELGRAPH_AUTH_CACHE_MAX_ENTRIES at least 1"
            )
        if self.db_ping_idle < 0:
            raise SettingsError("REELGRAPH_DB_PING_IDLE must be 0 (always ping) or more")
        if self.rate_limit_budget < self.max_cost:
            raise SettingsError(
                "REELGRAPH_RATE_LIMIT_BUDGET must be at least REELGRAPH_MAX_COST, "
                "or the most expensive allowed query could never run"
            )
        if self.db_max_retries < 0:
            raise SettingsError("REELGRAPH_DB_MAX_RETRIES must be >= 0")
        if self.log_format not in ("auto", "json", "text"):
            raise SettingsError("REELGRAPH_LOG_FORMAT must be 'auto', 'json' or 'text'")
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise SettingsError(
                    f"REELGRAPH_CORS_ORIGINS: {origin!r} is not an origin "
                    "(scheme://host[:port], no path, no trailing slash) or '*'"
                )
        if self.shutdown_timeout < 0:
            raise SettingsError("REELGRAPH_SHUTDOWN_TIMEOUT must be >= 0")


def _parse(name: str, raw: str, default: object) -> object:
    env_name = "REELGRAPH_" + name.upper()
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        if isinstance(default, tuple):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
    except ValueError as exc:
        raise SettingsError(f"{env_name}: cannot use {raw!r}") from exc
    return raw
