"""Run a plain query without Strawberry's per-request machinery.

For every operation, Strawberry's `Schema.execute` builds an execution context, makes each
schema extension anew and runs its hooks around parsing, validation and execution: for a
query whose text is cached, more CPU than graphql-core's own `execute`. `Lane.execute`
takes the same steps for the common case only:

1. parsing and validation, cached by text (`Guard`, schema/guard.py);
2. the depth, alias and cost limits, and the rate limit (`Guard.admit`);
3. graphql-core's `execute` with the schema's executor (schema/plan.py);
4. the error codes of schema/errors.py.

Anything else is declined (None) before any side effect:
- a text that does not parse or validate;
- no operation to choose, or a mutation or subscription;
- a limit exceeded.

The caller then takes Strawberry's path, whose answer is the reference.
tests/schema/test_lane.py checks that both paths answer the same bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeGuard, cast

from graphql import ExecutionResult, OperationDefinitionNode, OperationType, execute
from strawberry.execution.is_awaitable import optimized_is_awaitable
from strawberry.schema._graphql_core import execution_context_class_kwargs

from schema.errors import format_error

if TYPE_CHECKING:
    from schema.build import Schema

# Strawberry's faster check, as its own path passes it (typed as a plain bool there).
_is_awaitable = cast("Callable[[Any], TypeGuard[Awaitable[Any]]]", optimized_is_awaitable)


class Lane:
    def __init__(self, schema: Schema) -> None:
        self._schema = schema._schema
        self._guard = schema.guard
        self._executor = execution_context_class_kwargs(schema.execution_context_class)

    async def execute(
        self,
        query: str,
        variables: Mapping[str, Any] | None,
        operation_name: str | None,
        context: Any,
    ) -> ExecutionResult | None:
        """The operation's result with coded errors, or None: take Strawberry's path."""
        guard = self._guard
        document = guard.document(query)
        if document is None or guard.validation(self._schema, query, document):
            return None
        if _query_operation(document.definitions, operation_name) is None:
            return None
        errors = guard.admit(query, document, operation_name, variables, context)
        if errors:
            if any((e.extensions or {}).get("code") != "RATE_LIMITED" for e in errors):
                return None  # a limit exceeded: nothing was charged
            return ExecutionResult(None, errors)
        result = execute(
            self._schema,
            document,
            context_value=context,
            variable_values=dict(variables) if variables is not None else None,
            operation_name=operation_name,
            is_awaitable=_is_awaitable,
            operation_extensions=None,
            **self._executor,
        )
        if not isinstance(result, ExecutionResult):
            result = await result
        if result.errors:
            request_id = getattr(context, "request_id", None)
            result.errors = [
                format_error(e, executing=True, request_id=request_id) for e in result.errors
            ]
        return result


def _query_operation(
    definitions: Any, operation_name: str | None
) -> OperationDefinitionNode | None:
    """The operation to run if it is a query; None for anything else."""
    chosen = None
    for definition in definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if operation_name is None:
            if chosen is not None:
                return None  # several operations and no name
            chosen = definition
        elif definition.name is not None and definition.name.value == operation_name:
            chosen = definition
            break
    if chosen is None or chosen.operation is not OperationType.QUERY:
        return None
    return chosen
