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
import keyword
import math
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

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

from schema.calls import DirectField, Strawberry, caller, deferred_info
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
    # For an attribute: its Python name, and the exact Python type (str, int or bool) of
    # a leaf value that needs no completion, which the generated code checks inline.
    attribute: str | None = None
    exact: type | None = None
    nullable: bool = True


class ObjectPlan:
    """How to complete one object type for one set of field nodes.

    `complete(run, source, path)` is generated once the fields are known (`seal`): one
    straight function per plan, in which an attribute is read as `source.name`, and a
    string, integer or boolean leaf is stored as it is when its type is exact (and an
    integer is within 32 bits); anything else calls the field's completer."""

    __slots__ = ("complete", "fields", "is_type_of", "type")

    def __init__(self, object_type: GraphQLObjectType) -> None:
        self.type = object_type
        self.fields: list[_Field] = []
        self.is_type_of = object_type.is_type_of
        self.complete: Callable[[_Run, Any, Path], dict[str, Any]] = self._unsealed

    def _unsealed(self, run: _Run, source: Any, path: Path) -> dict[str, Any]:
        raise AssertionError("ObjectPlan.seal() was not called")

    def seal(self) -> None:
        """Generate `complete` from the fields."""
        names: dict[str, Any] = {
            "_Fallback": _Fallback,
            "Path": Path,
            "TYPE": self.type.name,
            "is_type_of": self.is_type_of,
            "object_type": self.type,
            "call": self._call,
            "LOW": -_MAX_INT,
            "HIGH": _MAX_INT,
        }
        lines = ["def complete(run, source, path):"]
        if self.is_type_of is not None:
            # Strawberry's generated is_type_of (the only kind planned) ignores the info.
            lines.append("    if not is_type_of(source, None): raise _Fallback")
        lines.append("    result = {}")
        for i, field in enumerate(self.fields):
            key = repr(field.key)
            names[f"f{i}"] = field
            names[f"c{i}"] = field.complete
            if field.kind == _ATTRIBUTE and field.attribute is not None:
                lines.append(f"    v = source.{field.attribute}")
                check = _inline_check(field.exact, field.nullable)
                if check is not None:
                    lines.append(f"    if {check}: v = c{i}(run, v, path, {key}, TYPE)")
                else:
                    lines.append(f"    v = c{i}(run, v, path, {key}, TYPE)")
                lines.append(f"    result[{key}] = v")
            elif field.kind == _ATTRIBUTE:
                lines.append(f"    result[{key}] = c{i}(run, f{i}.read(source), path, {key}, TYPE)")
            elif field.kind == _TYPENAME:
                lines.append(f"    result[{key}] = TYPE")
            elif field.kind == _CALL:
                lines.append(
                    f"    result[{key}] = call(run, result, f{i}, source, Path(path, {key}, TYPE))"
                )
            else:
                lines.append(f"    result[{key}] = None")
                lines.append(
                    f"    run.delegated.append((result, {key}, object_type, source, "
                    f"f{i}.details, Path(path, {key}, TYPE)))"
                )
        lines.append("    return result")
        # Generated from GraphQL names (keys, attributes) and the plan's own objects.
        exec("\n".join(lines), names)
        self.complete = names["complete"]

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


def _plain_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("__")


def _inline_check(exact: type | None, nullable: bool) -> str | None:
    """The generated test of a leaf value `v` that the completer must see (None: every
    value goes to it); a value that fails it is stored as it is, as `_leaf` and
    `_non_null` would store it. A null goes to the completer of a non-null field."""
    if exact is str or exact is bool:
        check = f"type(v) is not {exact.__name__}"
    elif exact is int:
        check = "(type(v) is not int or not LOW <= v < HIGH)"
    else:
        return None
    return f"v is not None and {check}" if nullable else check


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


def _object_list(plan: ObjectPlan, *, nullable_items: bool) -> Complete:
    """`_list` of `_object` (or of `_non_null` of it), in one function."""

    def complete(run: _Run, value: Any, path: Path | None, key: Any, typename: str | None) -> Any:
        if value is None:
            return None
        if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
            raise _Fallback
        here = Path(path, key, typename)
        fill = plan.complete
        completed: list[dict[str, Any] | None] = []
        for i, item in enumerate(value):
            if item is None:
                if not nullable_items:
                    raise _Fallback
                completed.append(None)
            else:
                completed.append(fill(run, item, Path(here, i, None)))
        return completed

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
        plan.seal()
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
                kind, read = _CALL, caller(definition)
            complete = self.completer(field_def.type, details) if read is not None else None
            if complete is not None:
                planned = _Field(key, kind, details, field_def, read, complete)
                if kind == _ATTRIBUTE and _plain_name(definition.python_name):
                    planned.attribute = definition.python_name
                    leaf = field_def.type
                    planned.nullable = not isinstance(leaf, GraphQLNonNull)
                    if isinstance(leaf, GraphQLNonNull):
                        leaf = leaf.of_type
                    planned.exact = _EXACT.get(leaf) if is_leaf_type(leaf) else None
                return planned
        if isinstance(field_def.type, GraphQLNonNull):
            return None  # its error would null this object: graphql-core completes it
        return _Field(key, _DELEGATE, details, field_def)

    def completer(self, output: GraphQLOutputType, details: FieldDetailsList) -> Complete | None:
        if isinstance(output, GraphQLNonNull):
            inner = self.completer(output.of_type, details)
            return None if inner is None else _non_null(inner)
        if isinstance(output, GraphQLList):
            item_type = output.of_type
            inner = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
            if isinstance(inner, GraphQLObjectType):
                plan = self.object_plan(inner, details)
                nullable_items = inner is item_type
                return None if plan is None else _object_list(plan, nullable_items=nullable_items)
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
        info = self.build_resolve_info(field_def, _nodes(field_details_list), parent_type, path)
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


def planned_executor(maxsize: int, info_class: type[Info]) -> type[PlannedExecutor]:
    """An executor class with its own bounded plan cache (one per schema); `bind` it to
    the schema once built."""
    namespace = {
        "plan_cache": PlanCache(maxsize),
        "info_class": deferred_info(info_class),
        "direct_info_class": info_class,
    }
    return type("PlannedExecutor", (PlannedExecutor,), namespace)
