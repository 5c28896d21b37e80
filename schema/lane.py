"""Run a plain query without Strawberry's per-request machinery.

For every operation, Strawberry's `Schema.execute` builds an execution context, makes each
schema extension anew and runs its hooks around parsing, validation and execution: for a
query whose text is cached, more CPU than graphql-core's own `execute`. `Lane.execute`
takes the same steps for the common case only:

1. parsing and validation, cached by text (`Guard`, schema/guard.py);
2. the depth, alias and cost limits, then the rate limit (`Guard.measure`, `charge`);
3. graphql-core's execution with the schema's executor (schema/executor.py);
4. the error codes of schema/errors.py.

Anything else is declined (None) before any side effect:
- a text that does not parse or validate;
- no operation to choose, or a mutation or subscription;
- a limit exceeded.

The caller then takes Strawberry's path, whose answer is the reference.
tests/schema/test_lane.py checks that both paths answer the same bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeGuard, cast

from graphql import ExecutionResult, OperationType
from strawberry.execution.is_awaitable import optimized_is_awaitable

from schema.errors import format_error
from schema.limits import check, operation_of

if TYPE_CHECKING:
    from schema.build import Schema

# Strawberry's faster check, as its own path passes it (typed as a plain bool there).
_is_awaitable = cast("Callable[[Any], TypeGuard[Awaitable[Any]]]", optimized_is_awaitable)


class Lane:
    def __init__(self, schema: Schema) -> None:
        self._schema = schema._schema
        self._guard = schema.guard
        self._executor = schema.execution_context_class  # Strawberry's, if none was given
        if self._schema.get_directive("defer") or self._schema.get_directive("stream"):
            raise ValueError("the lane runs schemas without @defer and @stream")

    async def execute(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
    ) -> ExecutionResult | None:
        """The operation's result with coded errors, or None: take Strawberry's path."""
        guard = self._guard
        document = guard.document(query)
        if document is None or guard.validation(self._schema, query, document):
            return None
        operation = operation_of(document, operation_name)
        if operation is None or operation.operation is not OperationType.QUERY:
            return None
        measured = guard.measure(query, document, operation_name, variables)
        if measured is None or check(measured, guard.limits):
            return None  # nothing was charged yet
        refused = guard.charge(context, measured.cost)
        if refused:
            return ExecutionResult(None, refused)
        # graphql-core's `execute`, past its two wrapping calls and its coroutine: the
        # schema has no @defer or @stream (checked once), so the result is never
        # incremental.
        executor = self._executor.build(
            self._schema,
            document,
            context_value=context,
            raw_variable_values=variables,
            operation_name=operation_name,
            is_awaitable=_is_awaitable,
            operation_extensions=None,
        )
        if isinstance(executor, list):
            result = ExecutionResult(None, errors=executor)
        else:
            outcome = executor.execute_operation()
            if _is_awaitable(outcome):
                outcome = await outcome
            if not isinstance(outcome, ExecutionResult):
                raise TypeError("an incremental result from a schema without @defer")
            result = outcome
        if result.errors:
            request_id = getattr(context, "request_id", None)
            result.errors = [
                format_error(e, executing=True, request_id=request_id) for e in result.errors
            ]
        return result
