"""Reject expensive or abusive operations after parsing, before any resolver runs.

One extension does, in order: the token limit (at parse time), standard validation (with
field suggestions hidden unless debugging, results cached in a bounded LRU), the depth,
alias and cost limits of schema/limits.py, and the per-client rate limit charged by cost.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from graphql import DocumentNode, GraphQLError, parse
from graphql.validation import validate
from strawberry.extensions import SchemaExtension

from schema.limits import Limits, check, measure
from schema.ratelimit import RateLimiter

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A small bounded LRU: parsed documents and validation results by query text,
    execution plans by operation (schema/plan.py)."""

    def __init__(self, maxsize: int = 512) -> None:
        self._maxsize = maxsize
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        if len(self._entries) > self._maxsize:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class GuardCaches:
    documents: LruCache[str, DocumentNode]
    validation: LruCache[str, list[GraphQLError]]

    @classmethod
    def bounded(cls, maxsize: int) -> GuardCaches:
        return cls(documents=LruCache(maxsize), validation=LruCache(maxsize))


class QueryGuard(SchemaExtension):
    def __init__(
        self,
        *,
        limits: Limits,
        limiter: RateLimiter | None,
        caches: GuardCaches,
        debug: bool = False,
    ) -> None:
        self.limits = limits
        self.limiter = limiter
        self.caches = caches
        self.debug = debug

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        ec.parse_options["max_tokens"] = self.limits.max_tokens
        query = ec.query
        if query and ec.graphql_document is None:
            document = self.caches.documents.get(query)
            if document is None:
                try:
                    document = parse(query, max_tokens=self.limits.max_tokens)
                except GraphQLError:
                    document = None  # Strawberry parses again and reports the error
                else:
                    self.caches.documents.put(query, document)
            ec.graphql_document = document
        yield

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if document is not None and ec.pre_execution_errors is None:
            ec.pre_execution_errors = self._errors(document)
        yield

    def _errors(self, document: Any) -> list[GraphQLError]:
        ec = self.execution_context
        query = ec.query or ""
        errors = self.caches.validation.get(query) if query else None
        if errors is None:
            errors = validate(
                ec.schema._schema,
                document,
                ec.validation_rules,
                max_errors=20,
                hide_suggestions=not self.debug,
            )
            if query:
                self.caches.validation.put(query, errors)
        if errors:
            return errors
        measured = measure(document, ec.operation_name, ec.variables)
        if measured is None:
            return []  # no single operation: execution reports it
        errors = check(measured, self.limits)
        if errors or self.limiter is None:
            return errors
        return self._charge(measured.cost)

    def _charge(self, cost: int) -> list[GraphQLError]:
        context = self.execution_context.context
        assert self.limiter is not None
        decision = self.limiter.charge(client_key(context), cost)
        if decision.allowed:
            return []
        response = getattr(context, "response", None)
        if response is not None and hasattr(response, "headers"):
            response.status_code = 429
            response.headers["Retry-After"] = str(decision.retry_after)
        return [
            GraphQLError(
                f"Rate limit exceeded: this query costs {cost}; retry after "
                f"{decision.retry_after} s.",
                extensions={
                    "code": "RATE_LIMITED",
                    "cost": cost,
                    "retryAfter": decision.retry_after,
                },
            )
        ]


def client_key(context: Any) -> str:
    """The budget's owner: the token (hashed) when one is sent, else the client address."""
    credentials = getattr(context, "credentials", None)
    token = credentials() if callable(credentials) else None
    if token:
        return "t:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return "a:" + str(getattr(context, "client_address", None) or "unknown")
