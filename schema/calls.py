"""Call a Strawberry resolver as Strawberry's own wrapper does, without the wrapper.

For every field with a resolver, Strawberry hands graphql-core a wrapper
(`GraphQLCoreConverter.from_resolver`) that builds an `Info`, converts the arguments
graphql-core coerced into Python values (`convert_arguments`: Python names, enum
members, input dataclasses, UNSET), passes the source as `self`, `root` or `parent`,
runs the field's extensions and exception handlers and, for an async resolver, awaits
the result in one more coroutine. On W3's page that was about 6 % of the server's CPU,
most of it in the argument conversion.

For a field without extensions or exception handlers, the two callers here do the same
in one call:

- `caller`: a synchronous resolver without arguments, for the execution plans
  (schema/plan.py), whose `Info` is built only when read;
- `DirectField`: any resolver, sync or async, with arguments, for graphql-core's
  `execute_field` (`PlannedExecutor.execute_field`). Arguments written as literals are
  coerced and converted once per operation, when what they convert to cannot be changed
  by the resolver (None, UNSET, booleans, numbers, strings, enum members); anything else,
  and any argument read from a variable, is converted at every call, as Strawberry does.

Whatever does not fit (a subscription, a field extension, an exception handler, a
resolver parameter Strawberry fills some other way) gets None, and keeps Strawberry's
wrapper.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from inspect import Parameter
from typing import Any, Final, TypeVar, cast

from graphql import (
    FieldNode,
    GraphQLField,
    GraphQLResolveInfo,
    Node,
    VariableNode,
    get_argument_values,
)
from graphql.execution.collect_fields import FieldDetails
from graphql.pyutils import Path
from strawberry.schema.config import StrawberryConfig
from strawberry.types.arguments import convert_arguments
from strawberry.types.base import StrawberryList, StrawberryOptional
from strawberry.types.enum import has_enum_definition
from strawberry.types.field import StrawberryField
from strawberry.types.info import Info
from strawberry.types.lazy_type import LazyType
from strawberry.types.unset import UnsetType

__all__ = [
    "NOT_READ",
    "DirectField",
    "NotRead",
    "Strawberry",
    "caller",
    "deferred_info",
    "prefetched",
    "prefetched_attribute",
]

# What a converted argument may be for the conversion to be kept and shared by calls.
_IMMUTABLE = (type(None), bool, int, float, str, enum.Enum, UnsetType)

F = TypeVar("F", bound=Callable[..., Any])
FieldDetailsList = list[FieldDetails]
# read(source, executor, planned field, parent type, the parent object's path): the
# resolver's result.
Read = Callable[[Any, Any, Any, Any, Path], Any]


@dataclass(frozen=True, slots=True)
class Strawberry:
    """What Strawberry's wrapper reads from the schema: set once the schema is built."""

    config: StrawberryConfig
    scalar_registry: Mapping[object, Any]
    has_exception_handlers: Callable[[StrawberryField], bool]


def _parameters(field: StrawberryField) -> tuple[bool, list[str], str | None] | None:
    """(passes self, names given the source, name given the Info), as Strawberry's
    `get_arguments` passes them; None if the resolver asks for anything else."""
    resolver = field.base_resolver
    if resolver is None or field.extensions:
        return None
    asked = [
        resolver.self_parameter,
        resolver.root_parameter,
        resolver.parent_parameter,
        resolver.info_parameter,
    ]
    filled = {p.name for p in asked if p is not None}
    filled.update(a.python_name for a in field.arguments)
    if set(resolver.signature.parameters) - filled:
        return None  # a parameter Strawberry would fill some other way
    by_name = [p.name for p in asked[1:3] if p is not None]
    info_name = None if resolver.info_parameter is None else resolver.info_parameter.name
    return resolver.self_parameter is not None, by_name, info_name


def caller(field: StrawberryField) -> Read | None:
    """How the plans call a synchronous resolver without arguments: its Info is a
    `deferred_info`, whose GraphQLResolveInfo is built only if the resolver reads it."""
    resolver = field.base_resolver
    parameters = _parameters(field)
    if parameters is None or resolver is None or resolver.is_async or field.arguments:
        return None
    positional, by_name, info_name = parameters
    call = cast(Callable[..., Any], resolver.wrapped_func)
    signature = resolver.signature.parameters
    names = list(signature)
    if (
        positional
        and not by_name
        and names[1:] == ([] if info_name is None else [info_name])
        and all(p.kind is Parameter.POSITIONAL_OR_KEYWORD for p in signature.values())
    ):
        # A method of `self` alone, or of `self` and its info: passed by position, with no
        # keyword dict (the health fields, totalCount, edges).
        if info_name is None:
            return lambda source, executor, planned, parent, path: call(source)

        def read_with_info(
            source: Any, executor: Any, planned: Any, parent: Any, path: Path
        ) -> Any:
            return call(source, executor.info_class(field, executor, planned, parent, path))

        return read_with_info

    def read(source: Any, executor: Any, planned: Any, parent: Any, path: Path) -> Any:
        """`path`: the parent object's; the field's own is made only for its info."""
        kwargs = dict.fromkeys(by_name, source)
        if info_name is not None:
            kwargs[info_name] = executor.info_class(field, executor, planned, parent, path)
        return call(source, **kwargs) if positional else call(**kwargs)

    return read


class NotRead(enum.Enum):
    NOT_READ = "not read"


# What an object holds for a value it was not given beforehand.
NOT_READ: Final = NotRead.NOT_READ


def prefetched(attribute: str) -> Callable[[F], F]:
    """Mark a resolver whose value its object may already hold, in `attribute`: the plans
    (schema/plan.py) read the attribute, and call the resolver only when it holds
    NOT_READ. A list that read the value with its page (the bitrate of 20 live streams)
    then costs no call per object. The resolver must return what the attribute holds:
    graphql-core's own path calls it anyway."""

    def mark(resolver: F) -> F:
        resolver.__prefetched__ = attribute  # type: ignore[attr-defined]
        return resolver

    return mark


def prefetched_attribute(field: StrawberryField) -> str | None:
    """The attribute `prefetched` named for this field's resolver, if any."""
    resolver = field.base_resolver
    if resolver is None:
        return None
    name = getattr(resolver.wrapped_func, "__prefetched__", None)
    return name if isinstance(name, str) else None


def _has_variables(node: Node) -> bool:
    if isinstance(node, VariableNode):
        return True
    for key in node.keys:
        value = getattr(node, key, None)
        children = value if isinstance(value, tuple | list) else (value,)
        if any(isinstance(c, Node) and _has_variables(c) for c in children):
            return True
    return False


def _leaf(type_: Any) -> bool:
    """Whether an argument's Python type converts without building an input object."""
    while isinstance(type_, StrawberryOptional | StrawberryList | LazyType):
        type_ = type_.resolve_type() if isinstance(type_, LazyType) else type_.of_type
    if has_enum_definition(type_):
        return True
    return getattr(type_, "__strawberry_definition__", None) is None


class DirectField:
    """One field of one operation, resolved past Strawberry's wrapper."""

    __slots__ = (
        "by_name",
        "call",
        "details",
        "field",
        "field_def",
        "fixed",
        "info_class",
        "info_name",
        "positional",
        "strawberry",
    )

    def __init__(
        self,
        field: StrawberryField,
        field_def: GraphQLField,
        details: FieldDetailsList,
        parameters: tuple[bool, list[str], str | None],
        strawberry: Strawberry,
        info_class: type[Info],
    ) -> None:
        assert field.base_resolver is not None
        self.field = field
        self.field_def = field_def
        self.details = details
        self.positional, self.by_name, self.info_name = parameters
        self.call = cast(Callable[..., Any], field.base_resolver.wrapped_func)
        self.strawberry = strawberry
        self.info_class = info_class
        self.fixed = self._fixed()

    @classmethod
    def of(
        cls,
        field_def: GraphQLField,
        details: FieldDetailsList,
        strawberry: Strawberry,
        info_class: type[Info],
    ) -> DirectField | None:
        field = field_def.extensions.get("strawberry-definition")
        if not isinstance(field, StrawberryField) or field.is_subscription:
            return None  # a subscription's event is resolved by `lambda event: event`
        if strawberry.has_exception_handlers(field):
            return None
        parameters = _parameters(field)
        if parameters is None:
            return None
        return cls(field, field_def, details, parameters, strawberry, info_class)

    def _fixed(self) -> dict[str, Any] | None:
        """The converted arguments, if the same for every call and safe to share."""
        first = self.details[0]
        if first.fragment_variable_values is not None or _has_variables(first.node):
            return None
        try:
            coerced = self._coerce(None, None)
            if not all(
                _leaf(a.type)
                for a in self.field.arguments
                if coerced.get(self.strawberry.config.name_converter.from_argument(a)) is not None
            ):
                return None  # an input object, which a resolver may change
            kwargs = self._convert(coerced, None)
        except Exception:
            return None  # raised again at the call, where graphql-core reports it
        if not all(isinstance(v, _IMMUTABLE) for v in kwargs.values()):
            return None
        return kwargs

    def _coerce(self, variables: Any, hide: bool | None) -> dict[str, Any]:
        """graphql-core's coerced arguments, by GraphQL name."""
        first = self.details[0]
        node: FieldNode = first.node
        if not (self.field_def.args or node.arguments):
            return {}
        return get_argument_values(
            self.field_def, node, variables, first.fragment_variable_values, bool(hide)
        )

    def _convert(self, coerced: dict[str, Any], info: Info | None) -> dict[str, Any]:
        """Strawberry's Python values, by parameter name."""
        s = self.strawberry
        return convert_arguments(coerced, self.field.arguments, s.scalar_registry, s.config, info)

    def resolve(self, executor: Any, source: Any, info: GraphQLResolveInfo[Any]) -> Any:
        """What Strawberry's wrapper would return to graphql-core (the resolver's own
        result: an awaitable for an async resolver)."""
        strawberry_info = self.info_class(info, self.field)
        fixed = self.fixed
        if fixed is not None:
            kwargs = fixed.copy()
        else:
            coerced = self._coerce(executor.variable_values, executor.hide_suggestions)
            kwargs = self._convert(coerced, strawberry_info)
        for name in self.by_name:
            kwargs[name] = source
        if self.info_name is not None:
            kwargs[self.info_name] = strawberry_info
        return self.call(source, **kwargs) if self.positional else self.call(**kwargs)


def deferred_info(info_class: type[Info]) -> type[Info]:
    class DeferredInfo(info_class):  # type: ignore[valid-type,misc]
        """Strawberry's Info, whose GraphQLResolveInfo is built when first read: the
        health fields read theirs only when the stream's health was not read with it."""

        def __init__(
            self, field: StrawberryField, executor: Any, planned: Any, parent: Any, path: Path
        ) -> None:
            # The pieces, not a closure over them: a call makes one object, not six.
            self._field = field
            self._executor = executor
            self._planned = planned  # schema/plan.py's field: its key, definition, nodes
            self._parent = parent
            self._path = path  # the parent object's

        @functools.cached_property
        def _raw_info(self) -> GraphQLResolveInfo[Any]:
            planned, parent = self._planned, self._parent
            nodes = [d.node for d in planned.details]
            here = Path(self._path, planned.key, parent.name)
            return self._executor.build_resolve_info(planned.field_def, nodes, parent, here)  # type: ignore[no-any-return]

    return DeferredInfo
