"""Every error leaves with an `extensions.code`; unexpected ones leave with nothing else.

Codes: GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED, BAD_USER_INPUT, UNAUTHENTICATED,
FORBIDDEN, QUERY_TOO_COMPLEX, RATE_LIMITED, DATABASE_TIMEOUT, DATABASE_UNAVAILABLE,
INTERNAL_SERVER_ERROR. An unexpected exception is logged with the request id and answered
as INTERNAL_SERVER_ERROR carrying that id, never with Python or SQL text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import SchemaExtension

from db.errors import DatabaseTimeoutError, DatabaseUnavailableError
from resolvers.errors import ApiError
from schema.limits import count_tokens, too_complex

log = logging.getLogger("reelgraph.errors")

# Every `extensions.code` an error may carry: the product's whole list.
CODES = frozenset(
    {
        "GRAPHQL_PARSE_FAILED",
        "GRAPHQL_VALIDATION_FAILED",
        "BAD_USER_INPUT",
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "QUERY_TOO_COMPLEX",
        "RATE_LIMITED",
        "DATABASE_TIMEOUT",
        "DATABASE_UNAVAILABLE",
        "INTERNAL_SERVER_ERROR",
    }
)
INTERNAL_MESSAGE = "Internal server error."
# graphql-core's fixed wording when `max_tokens` stops the parser.
_TOKEN_LIMIT_PREFIX = "Syntax Error: Document contains more than"


class ErrorCodes(SchemaExtension):
    """Attach codes, mask the unexpected, and log it once with the request id."""

    def on_operation(self) -> Iterator[None]:
        self._executing = False
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [self._format(e) for e in result.errors]

    def on_execute(self) -> Iterator[None]:
        self._executing = True
        yield

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # graphql-transport-ws sends each result before on_operation ends: code them here.
        # (format_error leaves an error that already has a code as it is.)
        if getattr(result, "errors", None):
            result.errors = [self._format(e) for e in result.errors]
        yield

    def _format(self, error: GraphQLError) -> GraphQLError:
        ec = self.execution_context
        return format_error(
            error,
            executing=self._executing,
            request_id=getattr(ec.context, "request_id", None),
            query=ec.query,
            max_tokens=ec.parse_options.get("max_tokens"),
        )


def format_error(
    error: GraphQLError,
    *,
    executing: bool,
    request_id: str | None,
    query: str | None = None,
    max_tokens: int | None = None,
) -> GraphQLError:
    """The error as it leaves: with its code, and masked unless it was expected.

    `executing`: raised while the operation ran (after parsing and validation); `query`
    and `max_tokens` describe a parse stopped by the token limit."""
    original = error.original_error
    if isinstance(original, GraphQLError) and original is not error:
        return format_error(  # graphql-core wraps located errors
            original,
            executing=executing,
            request_id=request_id,
            query=query,
            max_tokens=max_tokens,
        )
    if isinstance(original, ApiError):
        return _with(error, original.message, {"code": original.code, **original.extensions})
    if isinstance(original, DatabaseTimeoutError):
        return _with(
            error,
            "The database did not answer in time.",
            {"code": "DATABASE_TIMEOUT", "requestId": request_id},
        )
    if isinstance(original, DatabaseUnavailableError):
        return _with(
            error,
            "The database is unavailable; try again shortly.",
            {"code": "DATABASE_UNAVAILABLE", "requestId": request_id},
        )
    if isinstance(error, GraphQLSyntaxError):
        if error.message.startswith(_TOKEN_LIMIT_PREFIX):
            limit = max_tokens or 0
            measured = count_tokens(query or "", stop_after=100 * limit)
            shaped = too_complex("tokens", measured, limit)
            return _with(error, shaped.message, dict(shaped.extensions or {}))
        return _with(error, error.message, {"code": "GRAPHQL_PARSE_FAILED"})
    if original is None and error.extensions and "code" in error.extensions:
        return error  # raised with its code already (limits, rate limit)
    if not executing and original is None:
        return _with(error, error.message, {"code": "GRAPHQL_VALIDATION_FAILED"})
    if executing and error.path is None:
        # Variable values that don't coerce to their declared types.
        return _with(error, error.message, {"code": "BAD_USER_INPUT"})
    log.error(
        "unexpected error",
        exc_info=original or error,
        extra={"request_id": request_id, "path": error.path},
    )
    return _with(
        error, INTERNAL_MESSAGE, {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    )


def _with(error: GraphQLError, message: str, extensions: dict[str, Any]) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )
