"""Assemble the Strawberry Schema object from the roots each type family contributes."""

from __future__ import annotations

import functools
from typing import Any

import strawberry
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from schema.chat import ChatMutation, ChatSubscription
from schema.errors import ErrorCodes
from schema.executor import planned_executor
from schema.guard import Guard, GuardCaches, QueryGuard
from schema.limits import Limits
from schema.live_health import LiveHealthQuery, LiveHealthSubscription
from schema.live_stream import LiveStream
from schema.query import Query
from schema.ratelimit import RateLimiter
from schema.user import User
from schema.vod import Vod

# Each type family adds its root fields here (merged into one Query / Mutation /
# Subscription type), so families never edit each other's modules.
QUERY_ROOTS: tuple[type, ...] = (Query, LiveHealthQuery)
MUTATION_ROOTS: tuple[type, ...] = (ChatMutation,)
SUBSCRIPTION_ROOTS: tuple[type, ...] = (ChatSubscription, LiveHealthSubscription)


class Schema(strawberry.Schema):
    # The checks of the QueryGuard extension; schema/lane.py runs them too.
    guard: Guard

    def process_errors(self, errors: object, execution_context: object = None) -> None:
        """Logging happens in ErrorCodes, once, and only for unexpected errors."""


def _root(name: str, roots: tuple[type, ...]) -> Any:
    if not roots:
        return None
    return roots[0] if len(roots) == 1 else merge_types(name, roots)


def build_schema(
    *,
    limits: Limits | None = None,
    limiter: RateLimiter | None = None,
    cache_size: int = 512,
    debug: bool = False,
    plans: bool = True,
) -> Schema:
    """The schema; `limits`, `limiter` and the bounded parse/validation caches guard it."""
    guard = Guard(
        limits=limits or Limits(),
        limiter=limiter,
        caches=GuardCaches.bounded(cache_size),
        debug=debug,
    )
    config = StrawberryConfig(auto_camel_case=True)
    executor = planned_executor(cache_size, config.info_class) if plans else None
    schema = Schema(
        query=_root("Query", QUERY_ROOTS),
        mutation=_root("Mutation", MUTATION_ROOTS),
        subscription=_root("Subscription", SUBSCRIPTION_ROOTS),
        types=[User, Vod, LiveStream],
        extensions=[functools.partial(QueryGuard, guard=guard), ErrorCodes],
        config=config,
        execution_context_class=executor,
    )
    if executor is not None:
        executor.bind(schema)
    schema.guard = guard
    return schema
