"""The executor class the schema runs operations with: graphql-core's, with its object
values completed from plans (schema/plan.py) and its resolvers called past Strawberry's
wrapper (schema/calls.py), both cached per operation in a bounded `PlanCache`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from graphql import GraphQLObjectType, GraphQLOutputType, GraphQLResolveInfo
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.info import Info

from schema.calls import DirectField, Strawberry, deferred_info
from schema.guard import LruCache
from schema.plan import Compiler, FieldDetailsList, ObjectPlan, Run, field_nodes

__all__ = ["PlanCache", "PlannedExecutor", "planned_executor"]


class PlanCache:
    """Plans by operation, in a bounded LRU. An entry holds its operation and fragments,
    so the ids of their nodes, which key the plans, cannot be reused while it lives."""

    def __init__(self, maxsize: int = 512) -> None:
        self._entries: LruCache[int, tuple[Any, Any, dict[Any, Any]]] = LruCache(maxsize)

    def plans_for(self, operation: Any, fragments: Any) -> dict[Any, Any]:
        """The operation's object plans and direct fields, by type and field nodes."""
        key = id(operation)
        entry = self._entries.get(key)
        if entry is None or entry[0] is not operation:
            entry = (operation, fragments, {})
            self._entries.put(key, entry)
        return entry[2]

    def __len__(self) -> int:
        return len(self._entries)


class PlannedExecutor(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor, completing object values from plans where it can."""

    plan_cache: PlanCache = PlanCache()
    info_class: Any = None  # a `deferred_info` of the schema's Info class
    direct_info_class: Any = None  # the schema's Info class
    strawberry: Strawberry | None = None  # set by `bind`, once the schema is built

    @classmethod
    def bind(cls, schema: Any) -> None:
        """Read what resolving past Strawberry's wrapper needs (schema/calls.py)."""
        converter = schema.schema_converter
        cls.strawberry = Strawberry(
            config=schema.config,
            scalar_registry=converter.scalar_registry,
            has_exception_handlers=lambda field: bool(
                converter._get_field_exception_handlers(field)
            ),
        )

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        """graphql-core's `execute_field`, with the resolver called past Strawberry's
        wrapper (`DirectField`) where it can be."""
        direct = self._direct(parent_type, field_details_list) if self._unwrapped() else None
        if direct is None:
            return super().execute_field(
                parent_type, source, field_details_list, path, position_context
            )
        field_def = direct.field_def
        return_type = field_def.type
        info = self.build_resolve_info(
            field_def, field_nodes(field_details_list), parent_type, path
        )
        try:
            result = direct.resolve(self, source, info)
            if self.is_awaitable(result):
                return self.complete_awaitable_value(
                    return_type, field_details_list, info, path, result, position_context
                )
            completed = self.complete_value(
                return_type, field_details_list, info, path, result, position_context
            )
            if self.is_awaitable(completed):
                return self._await_completed(completed, return_type, field_details_list, path)
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
        return completed

    async def _await_completed(
        self,
        completed: Awaitable[Any],
        return_type: GraphQLOutputType,
        details: FieldDetailsList,
        path: Path,
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, details, path)
            return None

    def _direct(
        self, parent_type: GraphQLObjectType, details: FieldDetailsList
    ) -> DirectField | None:
        plans = self.plan_cache.plans_for(self.operation, self.fragments)
        key = ("field", parent_type.name, *(id(d.node) for d in details))
        try:
            found: DirectField | None = plans[key]
            return found
        except KeyError:
            pass
        direct = None
        field_def = parent_type.fields.get(details[0].node.name.value)
        strawberry = self.strawberry
        if field_def is not None and strawberry is not None:
            direct = DirectField.of(field_def, details, strawberry, self.direct_info_class)
        plans[key] = direct
        return direct

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        plan = self._plan(return_type, field_details_list) if self._unwrapped() else None
        if plan is None:
            return super().complete_object_value(
                return_type, field_details_list, info, path, result, position_context
            )
        run = Run(self)

        def again() -> Any:
            return super(PlannedExecutor, self).complete_object_value(
                return_type, field_details_list, info, path, result, position_context
            )

        try:
            completed = plan.complete(run, result, path)
        except Exception:
            if not run.pending:
                return again()
            return self._settle(run, None, again)
        for container, key, parent, source, details, field_path in run.delegated:
            value = self.execute_field(parent, source, details, field_path, None)
            container[key] = value
            if self.is_awaitable(value):
                run.pending.append((container, key, value))
        if not run.pending:
            return completed
        return self._settle(run, completed, again)

    def _unwrapped(self) -> bool:
        """Whether no middleware (a schema extension's `resolve`) wraps the resolvers: the
        plans and direct fields call them without it."""
        manager = self.middleware_manager
        return manager is None or not manager.middlewares

    def _plan(self, return_type: GraphQLObjectType, details: FieldDetailsList) -> ObjectPlan | None:
        plans = self.plan_cache.plans_for(self.operation, self.fragments)
        key = (return_type.name, *(id(d.node) for d in details))
        try:
            plan: ObjectPlan | None = plans[key]
        except KeyError:
            plan = plans[key] = Compiler(self).object_plan(return_type, details)
        return plan

    async def _settle(
        self, run: Run, completed: dict[str, Any] | None, again: Callable[[], Any]
    ) -> Any:
        """Await what graphql-core owns. When the plan failed (`completed` is None), or a
        non-null field failed (its error nulls this object), graphql-core completes the
        object again: an awaitable is never dropped unawaited, its result is."""
        values = await asyncio.gather(*(p[2] for p in run.pending), return_exceptions=True)
        if completed is None or any(isinstance(v, BaseException) for v in values):
            value = again()
            return await value if self.is_awaitable(value) else value
        for (container, key, _), value in zip(run.pending, values, strict=True):
            container[key] = value
        return completed


def planned_executor(maxsize: int, info_class: type[Info]) -> type[PlannedExecutor]:
    """An executor class with its own bounded plan cache (one per schema); `bind` it to
    the schema once built."""
    namespace = {
        "plan_cache": PlanCache(maxsize),
        "info_class": deferred_info(info_class),
        "direct_info_class": info_class,
    }
    return type("PlannedExecutor", (PlannedExecutor,), namespace)
