"""Compiled completion of object values: graphql-core's execution without its per-field
machinery where a field needs none of it.

graphql-core completes every field of every object alike: it builds a Path and a
GraphQLResolveInfo, calls Strawberry's resolver wrapper (which builds an Info and converts
arguments), checks the result for an awaitable and walks the return type. On a page of 50
rows that was most of a request's CPU, spent on fields that only read an attribute.

`PlannedExecutor.complete_object_value` completes an object from a plan compiled once per
operation, object type and field nodes (so once per query text while its document is
cached), in which each selected field is one of:

- `__typename`: a constant;
- a plain attribute (a Strawberry field without resolver or extension): read directly;
- a synchronous resolver without arguments or extensions (`totalCount`, `edges`, the
  health fields): called with what it asks for (self, root, info), as Strawberry would;
- anything else (arguments, an async resolver, an interface or union, directives): left
  to graphql-core's own `execute_field`, after the planned fields, and only nullable ones,
  so that its errors are handled where graphql-core would handle them.

Leaves are checked as graphql-core checks them (a `str` for String and ID, a 32-bit `int`
for Int, ...), falling back to the type's own coercion for anything else. A value a
synchronous resolver returns as an awaitable is completed by graphql-core's
`complete_awaitable_value`, and awaited with the delegated fields.

Whatever the plan cannot complete exactly (a null in a non-null field, a value that does
not coerce, an exception from a resolver, an object of the wrong type) makes the whole
object complete again through graphql-core, which then produces the result and the
errors the specification asks for: the plan never builds an error itself.
"""

from __future__ import annotations

import asyncio
import functools
import math
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLBoolean,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLString,
    InlineFragmentNode,
    SelectionSetNode,
    is_leaf_type,
)
from graphql.execution.collect_fields import FieldDetails
from graphql.pyutils import Path, Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField
from strawberry.types.info import Info

from schema.guard import LruCache

__all__ = ["PlanCache", "PlannedExecutor", "planned_executor"]

_MAX_INT = 2**31
# The Python type graphql-core passes through unchanged for each built-in scalar.
_EXACT: dict[Any, type] = {
    GraphQLString: str,
    GraphQLID: str,
    GraphQLInt: int,
    GraphQLBoolean: bool,
    GraphQLFloat: float,
}

FieldDetailsList = list[FieldDetails]
# complete(run, value, parent path, key, parent type name): the value's position is
# passed in parts, and a Path is only built where a list or an object needs one.
Complete = Callable[["_Run", Any, Path | None, Any, str | None], Any]


class _Fallback(Exception):
    """The plan cannot complete this value exactly: graphql-core completes the object."""


class _Run:
    """One completion of a planned object: its executor, and what is left to it."""

    __slots__ = ("delegated", "executor", "pending")

    def __init__(self, executor: PlannedExecutor) -> None:
        self.executor = executor
        # (container, key, awaitable): completions graphql-core already owns.
        self.pending: list[tuple[dict[str, Any], str, Awaitable[Any]]] = []
        # (container, key, parent type, source, field details, path): fields left to
        # graphql-core, executed once every planned field has completed.
        self.delegated: list[
            tuple[dict[str, Any], str, GraphQLObjectType, Any, FieldDetailsList, Path]
        ] = []


_TYPENAME, _ATTRIBUTE, _CALL, _DELEGATE = range(4)
Read = Callable[[Any, "PlannedExecutor", "_Field", GraphQLObjectType, Path], Any]


@dataclass(slots=True)
class _Field:
    """One response key of a plan: how its value is read and completed."""

    key: str
    kind: int
    details: FieldDetailsList
    field_def: GraphQLField | None = None
    read: Any = None
    complete: Complete | None = None


class ObjectPlan:
    """How to complete one object type for one set of field nodes."""

    __slots__ = ("fields", "is_type_of", "type")

    def __init__(self, object_type: GraphQLObjectType) -> None:
        self.type = object_type
        self.fields: list[_Field] = []
        self.is_type_of = object_type.is_type_of

    def complete(self, run: _Run, source: Any, path: Path) -> dict[str, Any]:
        object_type = self.type
        # Strawberry's generated is_type_of (the only kind planned) ignores the info.
        if self.is_type_of is not None and not self.is_type_of(source, None):  # type: ignore[arg-type]
            raise _Fallback
        type_name = object_type.name
        result: dict[str, Any] = {}
        for field in self.fields:
            kind = field.kind
            key = field.key
            if kind == _ATTRIBUTE:
                result[key] = field.complete(run, field.read(source), path, key, type_name)  # type: ignore[misc]
            elif kind == _TYPENAME:
                result[key] = type_name
            elif kind == _CALL:
                result[key] = self._call(run, result, field, source, Path(path, key, type_name))
            else:
                result[key] = None
                run.delegated.append(
                    (result, key, object_type, source, field.details, Path(path, key, type_name))
                )
        return result

    def _call(
        self, run: _Run, result: dict[str, Any], field: _Field, source: Any, path: Path
    ) -> Any:
        executor = run.executor
        value = field.read(source, executor, field, self.type, path)
        if not executor.is_awaitable(value):
            return field.complete(run, value, path.prev, path.key, path.typename)  # type: ignore[misc]
        assert field.field_def is not None
        info = executor.build_resolve_info(field.field_def, _nodes(field.details), self.type, path)
        completion = executor.complete_awaitable_value(
            field.field_def.type, field.details, info, path, value, None
        )
        run.pending.append((result, field.key, completion))
        return None  # until `PlannedExecutor._settle` stores the completed value


def _nodes(details: FieldDetailsList) -> list[FieldNode]:
    return [d.node for d in details]


# -- completion of values by type -----------------------------------------------------


def _leaf(leaf_type: Any) -> Complete:
    exact = _EXACT.get(leaf_type)
    coerce = leaf_type.coerce_output_value

    def complete(run: _Run, value: Any, path: Path | None, key: Any, typename: str | None) -> Any:
        if value is None:
            return None
        if type(value) is exact:
            number: Any = value
            if exact is int:
                if -_MAX_INT <= number < _MAX_INT:
                    return value
            elif exact is not float or math.isfinite(number):
                return value
        if run.executor.is_awaitable(value):
            raise _Fallback
        coerced = coerce(value)  # raises as graphql-core would: the fallback reports it
        if coerced is Undefined or coerced is None:
            raise _Fallback
        return coerced

    return complete


def _non_null(inner: Complete) -> Complete:
    def complete(run: _Run, value: Any, path: Path | None, key: Any, typename: str | None) -> Any:
        if value is None:
            raise _Fallback
        return inner(run, value, path, key, typename)

    return complete


def _list(item: Complete) -> Complete:
    def complete(run: _Run, value: Any, path: Path | None, key: Any, typename: str | None) -> Any:
        if value is None:
            return None
        if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
            raise _Fallback
        here = Path(path, key, typename)
        return [item(run, v, here, i, None) for i, v in enumerate(value)]

    return complete


def _object(plan: ObjectPlan) -> Complete:
    def complete(run: _Run, value: Any, path: Path | None, key: Any, typename: str | None) -> Any:
        if value is None:
            return None
        return plan.complete(run, value, Path(path, key, typename))

    return complete


# -- compiling ------------------------------------------------------------------------


def _plain_selections(
    selection_set: SelectionSetNode | None, fragments: dict[str, Any], seen: set[str]
) -> bool:
    """Whether a selection set, with the fragments it spreads, carries no directive, so
    that collecting its fields does not depend on variables (@skip, @include, @defer)."""
    if selection_set is None:
        return True
    for selection in selection_set.selections:
        if selection.directives:
            return False
        if isinstance(selection, InlineFragmentNode):
            if not _plain_selections(selection.selection_set, fragments, seen):
                return False
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in seen:
                continue
            seen.add(name)
            details = fragments.get(name)
            if details is None or details.variable_signatures:
                return False
            definition = details.definition
            if definition.directives:
                return False
            if not _plain_selections(definition.selection_set, fragments, seen):
                return False
    return True


def _caller(field: StrawberryField) -> Read | None:
    """How to call a synchronous resolver without arguments or extensions, passing what
    it asks for as Strawberry's `get_arguments` would (self, root, parent, info)."""
    resolver = field.base_resolver
    if resolver is None or resolver.is_async or field.arguments or field.extensions:
        return None
    asked = [
        resolver.self_parameter,
        resolver.root_parameter,
        resolver.parent_parameter,
        resolver.info_parameter,
    ]
    if len(resolver.signature.parameters) != sum(p is not None for p in asked):
        return None  # a parameter Strawberry would fill some other way
    positional = resolver.self_parameter is not None
    by_name = [p.name for p in asked[1:3] if p is not None]
    info_name = None if resolver.info_parameter is None else resolver.info_parameter.name
    call = cast(Callable[..., Any], resolver.wrapped_func)

    def read(
        source: Any, executor: PlannedExecutor, planned: _Field, parent: Any, path: Path
    ) -> Any:
        kwargs = dict.fromkeys(by_name, source)
        if info_name is not None:
            field_def = planned.field_def
            assert field_def is not None

            def raw() -> GraphQLResolveInfo[Any]:
                return executor.build_resolve_info(field_def, _nodes(planned.details), parent, path)

            kwargs[info_name] = executor.info_class(raw, field)
        return call(source, **kwargs) if positional else call(**kwargs)

    return read


class _Compiler:
    def __init__(self, executor: PlannedExecutor) -> None:
        self.executor = executor
        self.fragments: dict[str, Any] = executor.fragments

    def object_plan(
        self, object_type: GraphQLObjectType, details: FieldDetailsList
    ) -> ObjectPlan | None:
        plain = all(
            d.defer_usage is None
            and d.fragment_variable_values is None
            and _plain_selections(d.node.selection_set, self.fragments, set())
            for d in details
        )
        if not plain:
            return None
        definition = object_type.extensions.get("strawberry-definition")
        if definition is None or getattr(definition, "is_type_of", None) is not None:
            return None  # a hand-written is_type_of may want the info the plan omits
        grouped, defer_usages, _forbidden = self.executor.collect_subfields(object_type, details)
        if defer_usages:
            return None
        plan = ObjectPlan(object_type)
        for key, sub_details in grouped.items():
            planned = self.field(object_type, key, sub_details)
            if planned is None:
                return None
            plan.fields.append(planned)
        return plan

    def field(
        self, parent: GraphQLObjectType, key: str, details: FieldDetailsList
    ) -> _Field | None:
        name = details[0].node.name.value
        if name == "__typename":
            return _Field(key, _TYPENAME, details)
        field_def = parent.fields.get(name)
        if field_def is None:
            return None
        definition = field_def.extensions.get("strawberry-definition")
        if isinstance(definition, StrawberryField) and not details[0].node.arguments:
            read: Any
            if definition.is_basic_field:
                kind, read = _ATTRIBUTE, operator.attrgetter(definition.python_name)
            else:
                kind, read = _CALL, _caller(definition)
            complete = self.completer(field_def.type, details) if read is not None else None
            if complete is not None:
                return _Field(key, kind, details, field_def, read, complete)
        if isinstance(field_def.type, GraphQLNonNull):
            return None  # its error would null this object: graphql-core completes it
        return _Field(key, _DELEGATE, details, field_def)

    def completer(self, output: GraphQLOutputType, details: FieldDetailsList) -> Complete | None:
        if isinstance(output, GraphQLNonNull):
            inner = self.completer(output.of_type, details)
            return None if inner is None else _non_null(inner)
        if isinstance(output, GraphQLList):
            item = self.completer(output.of_type, details)
            return None if item is None else _list(item)
        if is_leaf_type(output):
            return _leaf(output)
        if isinstance(output, GraphQLObjectType):
            plan = self.object_plan(output, details)
            return None if plan is None else _object(plan)
        return None  # interfaces and unions: graphql-core resolves the runtime type


# -- the executor ---------------------------------------------------------------------


class PlanCache:
    """Plans by operation, in a bounded LRU. An entry holds its operation and fragments,
    so the ids of their nodes, which key the plans, cannot be reused while it lives."""

    def __init__(self, maxsize: int = 512) -> None:
        self._entries: LruCache[int, tuple[Any, Any, dict[Any, ObjectPlan | None]]] = LruCache(
            maxsize
        )

    def plans_for(self, operation: Any, fragments: Any) -> dict[Any, ObjectPlan | None]:
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
    info_class: Any = None

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        plan = self._plan(return_type, field_details_list)
        if plan is None:
            return super().complete_object_value(
                return_type, field_details_list, info, path, result, position_context
            )
        run = _Run(self)

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

    def _plan(self, return_type: GraphQLObjectType, details: FieldDetailsList) -> ObjectPlan | None:
        plans = self.plan_cache.plans_for(self.operation, self.fragments)
        key = (return_type.name, *(id(d.node) for d in details))
        try:
            return plans[key]
        except KeyError:
            plan = plans[key] = _Compiler(self).object_plan(return_type, details)
            return plan

    async def _settle(
        self, run: _Run, completed: dict[str, Any] | None, again: Callable[[], Any]
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


def _deferred_info(info_class: type[Info]) -> type[Info]:
    class DeferredInfo(info_class):  # type: ignore[valid-type,misc]
        """Strawberry's Info, whose GraphQLResolveInfo is built when first read: the
        health fields read theirs only when the stream's health was not read with it."""

        def __init__(
            self, build: Callable[[], GraphQLResolveInfo[Any]], field: StrawberryField
        ) -> None:
            self._build = build
            self._field = field

        @functools.cached_property
        def _raw_info(self) -> GraphQLResolveInfo[Any]:
            return self._build()

    return DeferredInfo


def planned_executor(maxsize: int, info_class: type[Info]) -> type[PlannedExecutor]:
    """An executor class with its own bounded plan cache (one per schema)."""
    return type(
        "PlannedExecutor",
        (PlannedExecutor,),
        {"plan_cache": PlanCache(maxsize), "info_class": _deferred_info(info_class)},
    )
