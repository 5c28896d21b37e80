"""Reject expensive or abusive operations after parsing, before any resolver runs.

`Guard` does, in order: the token limit (at parse time), standard validation (with field
suggestions hidden unless debugging, results cached in a bounded LRU), the depth, alias
and cost limits of schema/limits.py, and the per-client rate limit charged by cost.
`QueryGuard` runs it as a Strawberry extension; schema/lane.py calls it directly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse
from graphql.validation import ASTValidationRule, specified_rules, validate
from strawberry.extensions import SchemaExtension

from schema.limits import Limits, Measure, check, measure
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
    # An operation's measure when it takes no variables: by (query text, operation name).
    measures: LruCache[tuple[str, str | None], Measure]

    @classmethod
    def bounded(cls, maxsize: int) -> GuardCaches:
        return cls(
            documents=LruCache(maxsize), validation=LruCache(maxsize), measures=LruCache(maxsize)
        )


@dataclass(frozen=True, slots=True)
class Guard:
    """The checks every operation passes, shared by the extension below (Strawberry's
    path) and `Lane` (schema/lane.py)."""

    limits: Limits
    limiter: RateLimiter | None
    caches: GuardCaches
    debug: bool = False

    def document(self, query: str) -> DocumentNode | None:
        """The parsed text, cached; None if it does not parse (within the token limit)."""
        document = self.caches.documents.get(query)
        if document is None:
            try:
                document = parse(query, max_tokens=self.limits.max_tokens)
            except GraphQLError:
                return None
            self.caches.documents.put(query, document)
        return document

    def validation(
        self,
        schema: GraphQLSchema,
        query: str,
        document: DocumentNode,
        rules: Collection[type[ASTValidationRule]] = specified_rules,
    ) -> list[GraphQLError]:
        """Standard validation's errors (field suggestions only when debugging), cached
        by text."""
        errors = self.caches.validation.get(query) if query else None
        if errors is None:
            errors = validate(
                schema, document, rules, max_errors=20, hide_suggestions=not self.debug
            )
            if query:
                self.caches.validation.put(query, errors)
        return errors

    def admit(
        self,
        query: str,
        document: DocumentNode,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
        context: Any,
    ) -> list[GraphQLError]:
        """The limits and the rate limit for a valid document: their errors, or none.

        The client's budget is charged only when the limits pass."""
        measured = self.measure(query, document, operation_name, variables)
        if measured is None:
            return []  # no single operation: execution reports it
        return check(measured, self.limits) or self.charge(context, measured.cost)

    def measure(
        self,
        query: str,
        document: DocumentNode,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> Measure | None:
        """The operation's depth, aliases and cost (schema/limits.py), cached for an
        operation sent without variables (their defaults are in the text, so it is fixed)."""
        if variables or not query:
            return measure(document, operation_name, variables)
        key = (query, operation_name)
        measured = self.caches.measures.get(key)
        if measured is None:
            measured = measure(document, operation_name, None)
            if measured is not None:
                self.caches.measures.put(key, measured)
        return measured

    def charge(self, context: Any, cost: int) -> list[GraphQLError]:
        """Charge the client's budget `cost` points: no error, or the RATE_LIMITED one; a
        refusal also sets the response's status (429) and Retry-After on
        `context.response`."""
        if self.limiter is None:
            return []
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


class QueryGuard(SchemaExtension):
    def __init__(self, *, guard: Guard) -> None:
        self.guard = guard

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        ec.parse_options["max_tokens"] = self.guard.limits.max_tokens
        query = ec.query
        if query and ec.graphql_document is None:
            # None: Strawberry parses again and reports the error.
            ec.graphql_document = self.guard.document(query)
        yield

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if document is not None and ec.pre_execution_errors is None:
            query = ec.query or ""
            errors = self.guard.validation(ec.schema._schema, query, document, ec.validation_rules)
            ec.pre_execution_errors = errors or self.guard.admit(
                query, document, ec.operation_name, ec.variables, ec.context
            )
        yield


def client_key(context: Any) -> str:
    """The budget's owner: the token (hashed) when one is sent, else the client address."""
    credentials = getattr(context, "credentials", None)
    if callable(credentials) and credentials():
        # The SHA-256 the login keys on too (`Context.token_digest`), computed once.
        digest: bytes = context.token_digest()
        return "t:" + digest.hex()[:32]
    return "a:" + str(getattr(context, "client_address", None) or "unknown")
