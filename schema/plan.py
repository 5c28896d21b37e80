"""Compiled completion of object values: graphql-core's execution without its per-field
machinery where a field needs none of it.

graphql-core completes every field of every object alike: it builds a Path and a
GraphQLResolveInfo, calls Strawberry's resolver wrapper (which builds an Info and converts
arguments), checks the result for an awaitable and walks the return type. On a page of 50
rows that was most of a request's CPU, spent on fields that only read an attribute.

`PlannedExecutor.complete_object_value` (schema/executor.py) completes an object from a
plan compiled once per operation, object type and field nodes (so once per query text
while its document is cached), in which each selected field is one of:

- `__typename`: a constant;
- a plain attribute (a Strawberry field without resolver or extension): read directly;
- a synchronous resolver without arguments or extensions (`totalCount`, `edges`, the
  health fields): called with what it asks for (self, root, info), as Strawberry would;
  one marked `prefetched` (schema/calls.py) is read from its attribute instead, and
  called only when the object was not given its value;
- anything else (arguments, an async resolver, an interface or union, directives): left
  to graphql-core's `execute_field` (which calls the resolver past Strawberry's wrapper
  where it can, schema/calls.py), after the planned fields, and only nullable ones, so
  that its errors are handled where graphql-core would handle them.

Each plan's completion is one generated function (`ObjectPlan.seal`).

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

import keyword
import math
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    GraphQLString,
    InlineFragmentNode,
    SelectionSetNode,
    is_leaf_type,
)
from graphql.execution.collect_fields import FieldDetails
from graphql.pyutils import Path, Undefined
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE
from strawberry.types.field import StrawberryField

from schema.calls import NOT_READ, caller, prefetched_attribute

if TYPE_CHECKING:
    from schema.executor import PlannedExecutor

__all__ = ["Compiler", "FieldDetailsList", "ObjectPlan", "Run", "field_nodes"]

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
_new_tuple = tuple.__new__
# complete(run, value, parent path, key, parent type name): the value's position is
# passed in parts, and a Path is only built where a list or an object needs one.
Complete = Callable[["Run", Any, Path | None, Any, str | None], Any]


class _Fallback(Exception):
    """The plan cannot complete this value exactly: graphql-core completes the object."""


class Run:
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
    # For an attribute: its Python name; for a call, the attribute that may hold its value
    # (`prefetched`). For either: the exact Python type (str, int or bool) of a leaf value
    # that needs no completion, which the generated code checks inline.
    attribute: str | None = None
    exact: type | None = None
    nullable: bool = True


class ObjectPlan:
    """How to complete one object type for one set of field nodes.

    `complete(run, source, path)` is generated once the fields are known (`seal`): one
    straight function per plan, in which an attribute is read as `source.name`, and a
    string, integer or boolean leaf is stored as it is when its type is exact (and an
    integer is within 32 bits); anything else calls the field's completer."""

    __slots__ = ("complete", "fields", "is_type_of", "needs_path", "type")

    def __init__(self, object_type: GraphQLObjectType) -> None:
        self.type = object_type
        self.fields: list[_Field] = []
        self.is_type_of = object_type.is_type_of
        # Whether completing it uses its path (a field called or left to graphql-core, at
        # any depth); a plan that does not is passed None, and no Path is made for it.
        self.needs_path = True
        self.complete: Callable[[Run, Any, Path | None], dict[str, Any]] = self._unsealed

    def _unsealed(self, run: Run, source: Any, path: Path | None) -> dict[str, Any]:
        raise AssertionError("ObjectPlan.seal() was not called")

    def seal(self) -> None:
        """Generate `complete` from the fields."""
        self.needs_path = any(
            f.kind in (_CALL, _DELEGATE) or needs_path(f.complete) for f in self.fields
        )
        names: dict[str, Any] = {
            "_Fallback": _Fallback,
            "Path": Path,
            "TYPE": self.type.name,
            "is_type_of": self.is_type_of,
            "object_type": self.type,
            "call": self._call,
            "LOW": -_MAX_INT,
            "HIGH": _MAX_INT,
            "NOT_READ": NOT_READ,
        }
        lines = ["def complete(run, source, path):"]
        if self.is_type_of is not None:
            # Strawberry's generated is_type_of (the only kind planned) ignores the info.
            # It accepts an instance of the type's own class that is not cast
            # (`strawberry.cast`) without a call; anything else asks it.
            definition = self.type.extensions.get("strawberry-definition")
            names["ORIGIN"] = getattr(definition, "origin", ())
            names["CAST"] = TYPE_CAST_ATTRIBUTE
            lines.append(
                "    if getattr(source, CAST, None) is not None or not isinstance(source, ORIGIN):"
            )
            lines.append("        if not is_type_of(source, None): raise _Fallback")
        lines.append("    result = {}")
        for i, field in enumerate(self.fields):
            key = repr(field.key)
            names[f"f{i}"] = field
            names[f"c{i}"] = field.complete
            inner = getattr(field.complete, "object_plan", None)
            if field.kind == _ATTRIBUTE and field.attribute is not None and inner is not None:
                # An object (a message's author): its plan called here, as `_object` and
                # `_non_null` would call it, without their call.
                names[f"p{i}"] = inner
                here = f"Path(path, {key}, TYPE)" if inner.needs_path else "None"
                lines.append(f"    v = source.{field.attribute}")
                if field.complete.non_null:  # type: ignore[union-attr]
                    lines.append("    if v is None: raise _Fallback")
                    lines.append(f"    v = p{i}.complete(run, v, {here})")
                else:
                    lines.append(f"    if v is not None: v = p{i}.complete(run, v, {here})")
                lines.append(f"    result[{key}] = v")
            elif field.kind == _ATTRIBUTE and field.attribute is not None:
                lines.append(f"    v = source.{field.attribute}")
                _store(lines, field, f"c{i}(run, v, path, {key}, TYPE)")
            elif field.kind == _ATTRIBUTE:
                lines.append(f"    result[{key}] = c{i}(run, f{i}.read(source), path, {key}, TYPE)")
            elif field.kind == _TYPENAME:
                lines.append(f"    result[{key}] = TYPE")
            elif field.kind == _CALL:
                # The resolver's value, stored as it is when the inline check passes it
                # (a leaf of its exact type, or a null in a nullable field).
                read = f"f{i}.read(source, run.executor, f{i}, object_type, path)"
                if field.attribute is not None:  # prefetched: called only if not given
                    lines.append(f"    v = source.{field.attribute}")
                    lines.append(f"    if v is NOT_READ: v = {read}")
                else:
                    lines.append(f"    v = {read}")
                _store(lines, field, f"call(run, result, f{i}, v, path)")
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

    def _call(self, run: Run, result: dict[str, Any], field: _Field, value: Any, path: Path) -> Any:
        """Complete what the field's resolver returned; `path` is this object's (the
        field's own Path is made only if the resolver reads its info, or returns an
        awaitable)."""
        executor = run.executor
        if not executor.is_awaitable(value):
            return field.complete(run, value, path, field.key, self.type.name)  # type: ignore[misc]
        assert field.field_def is not None
        path = Path(path, field.key, self.type.name)
        info = executor.build_resolve_info(
            field.field_def, field_nodes(field.details), self.type, path
        )
        completion = executor.complete_awaitable_value(
            field.field_def.type, field.details, info, path, value, None
        )
        run.pending.append((result, field.key, completion))
        return None  # until `PlannedExecutor._settle` stores the completed value


def _plain_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("__")


def _store(lines: list[str], field: _Field, completion: str) -> None:
    """The generated lines storing `v`: as it is when the inline check passes it, else
    as `completion` (an expression) completes it."""
    check = _inline_check(field.exact, field.nullable)
    lines.append(f"    v = {completion}" if check is None else f"    if {check}: v = {completion}")
    lines.append(f"    result[{field.key!r}] = v")


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


def field_nodes(details: FieldDetailsList) -> list[FieldNode]:
    return [d.node for d in details]


# -- completion of values by type -----------------------------------------------------


def _leaf(leaf_type: Any) -> Complete:
    exact = _EXACT.get(leaf_type)
    coerce = leaf_type.coerce_output_value

    def complete(run: Run, value: Any, path: Path | None, key: Any, typename: str | None) -> Any:
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

    return _paths(complete, False)


def _non_null(inner: Complete) -> Complete:
    def complete(run: Run, value: Any, path: Path | None, key: Any, typename: str | None) -> Any:
        if value is None:
            raise _Fallback
        return inner(run, value, path, key, typename)

    plan = getattr(inner, "object_plan", None)
    if plan is not None:  # a non-null object: inlined by `ObjectPlan.seal` too
        complete.object_plan = plan  # type: ignore[attr-defined]
        complete.non_null = True  # type: ignore[attr-defined]

    return _paths(complete, needs_path(inner))


def _paths(complete: Complete, needed: bool) -> Complete:
    """Mark a completer with whether it uses the path it is given (`needs_path`)."""
    complete.needs_path = needed  # type: ignore[attr-defined]
    return complete


def needs_path(complete: Complete | None) -> bool:
    """Whether a completer uses its path; unmarked ones are assumed to."""
    return getattr(complete, "needs_path", True)


def _iterable(value: Any) -> bool:
    """Whether graphql-core completes `value` as a list (anything else is an error)."""
    return not isinstance(value, str | bytes | dict) and hasattr(value, "__iter__")


def _list(item: Complete) -> Complete:
    paths = needs_path(item)

    def complete(run: Run, value: Any, path: Path | None, key: Any, typename: str | None) -> Any:
        if value is None:
            return None
        if not _iterable(value):
            raise _Fallback
        here = Path(path, key, typename) if paths else None
        return [item(run, v, here, i, None) for i, v in enumerate(value)]

    return _paths(complete, paths)


def _object_list(plan: ObjectPlan, *, nullable_items: bool) -> Complete:
    """`_list` of `_object` (or of `_non_null` of it), in one function."""
    paths = plan.needs_path

    def complete(run: Run, value: Any, path: Path | None, key: Any, typename: str | None) -> Any:
        if value is None:
            return None
        if not _iterable(value):
            raise _Fallback
        fill = plan.complete
        here = Path(path, key, typename) if paths else None
        completed: list[dict[str, Any] | None] = []
        for i, item in enumerate(value):
            if item is None:
                if not nullable_items:
                    raise _Fallback
                completed.append(None)
            else:
                # Path(here, i, None) without the Python frame of its __new__.
                completed.append(
                    fill(run, item, _new_tuple(Path, (here, i, None)) if paths else None)
                )
        return completed

    return _paths(complete, paths)


def _object(plan: ObjectPlan) -> Complete:
    paths = plan.needs_path

    def complete(run: Run, value: Any, path: Path | None, key: Any, typename: str | None) -> Any:
        if value is None:
            return None
        return plan.complete(run, value, Path(path, key, typename) if paths else None)

    complete.object_plan = plan  # type: ignore[attr-defined]  # inlined by `ObjectPlan.seal`
    complete.non_null = False  # type: ignore[attr-defined]
    return _paths(complete, paths)


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


class Compiler:
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
                elif kind == _CALL:
                    given = prefetched_attribute(definition)
                    if given is not None and _plain_name(given):
                        planned.attribute = given
                if kind == _CALL or planned.attribute is not None:
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
